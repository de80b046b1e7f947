"""The one table of model options (spec §7 "Option / PARAMETER keys"): each name, type and default.

Why here: a Modelfile's PARAMETER lines are typed with it when a model is created (the store writes the
params layer), and the engine merges Ollama's defaults, the params layer and request options with it.
Two copies of the table had already drifted apart; now both read this one.
"""

from __future__ import annotations

# name -> (type, default). Defaults are Ollama's api.DefaultOptions (num_ctx comes from the engine config).
OPTIONS: dict[str, tuple[type, object]] = {
    "num_keep": (int, 4),
    "seed": (int, -1),
    "num_predict": (int, -1),
    "top_k": (int, 40),
    "top_p": (float, 0.9),
    "min_p": (float, 0.0),
    "typical_p": (float, 1.0),
    "repeat_last_n": (int, 64),
    "temperature": (float, 0.8),
    "repeat_penalty": (float, 1.1),
    "presence_penalty": (float, 0.0),
    "frequency_penalty": (float, 0.0),
    "stop": (list, []),
    "num_ctx": (int, 4096),
    "num_batch": (int, 512),
    "num_gpu": (int, -1),
    "main_gpu": (int, 0),
    "use_mmap": (bool, True),
    "num_thread": (int, 0),
    "draft_num_predict": (int, 0),
}

# Accepted and dropped with a warning, in Modelfiles and in request options alike.
DEPRECATED = frozenset({
    "penalize_newline", "low_vram", "f16_kv", "logits_all", "vocab_only", "use_mlock", "mirostat",
    "mirostat_tau", "mirostat_eta",
})
