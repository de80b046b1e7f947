"""The version reported by /api/version.

Clients such as Open WebUI compare it with Ollama releases to decide which API shapes to use, so we report
the Ollama release whose behaviour Corral follows (v0.12.6+: errors before a stream are HTTP statuses).
"""

OLLAMA_COMPAT_VERSION = "0.12.6"
