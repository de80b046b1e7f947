"""OCI registry client for pull and push (spec §5 pull/push, §6).

Modules: client (HTTP, pooled session, error texts, tuning), auth (401 challenges: Basic, Bearer,
Ollama's signed tokens), keys (the ed25519 identity), partial (crash-safe resume state), download
(parallel verified shared downloads), pull and push (the progress streams).
"""
