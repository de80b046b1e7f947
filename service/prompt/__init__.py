"""Prompts: Go text/template (a port), Ollama's template rules, Jinja chat templates, capabilities.

Everything that reads a model's template lives here, so show's capabilities, create's template checks and
the prompt that generate and chat build all agree on what a template means.
"""
