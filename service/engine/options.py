"""Model options: Ollama's defaults, the params layer merged with request options, and the split between
options that shape a loaded runner and options that only steer one request.

Why: Ollama merges three layers (its defaults, the model's `params` layer, the request's `options`), and a
change in a *load* option (num_ctx, num_batch, num_thread, use_mmap) means the runner must be reloaded,
while sampling options (temperature, top_k, seed, stop, ...) travel with each request. Keeping that split
in one table avoids reloading a model because a request changed its temperature, and never silently
ignores a changed context size. Request options arrive through protobuf Struct, where every number is a
double, so values are coerced to the option's type here with Ollama's error texts.
"""

from __future__ import annotations

import logging
import math
import os

from corral.store.errors import InvalidArgument
from corral.store.options import DEPRECATED, OPTIONS

log = logging.getLogger("corral.engine")

# Option values llama.cpp can hold: int32 (the seed: 64 bits, reduced to 32 by the sampler) and float32.
_INT32_LIMIT, _SEED_LIMIT, _FLOAT32_MAX = 2**31 - 1, 2**63 - 1, 3.4028234663852886e38
_TYPE_NAMES = {int: "integer", float: "float32", bool: "boolean", str: "string", list: "array"}


def coerce(key: str, value):
    """One option value converted to its type, or InvalidArgument with Ollama's text."""
    kind = OPTIONS[key][0]
    error = InvalidArgument(f'option "{key}" must be of type {_TYPE_NAMES[kind]}')
    if kind is bool:
        if not isinstance(value, bool):
            raise error
        return value
    if kind in (int, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise error
        if not math.isfinite(value) or abs(value) > (_SEED_LIMIT if key == "seed" else _INT32_LIMIT if kind is int
                                                     else _FLOAT32_MAX):
            raise InvalidArgument(f'option "{key}" is out of range: {str(value)[:32]}')
        return int(value) if kind is int else float(value)
    if kind is list:
        if isinstance(value, str):
            return [value]
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise InvalidArgument(f'option "{key}" must be of type array of strings')
        return list(value)
    if not isinstance(value, str):
        raise error
    return value


def clean(options: dict | None) -> dict:
    """Known options only, typed; unknown keys are ignored (logged) as Ollama does."""
    out = {}
    for key, value in (options or {}).items():
        if key in DEPRECATED:
            log.warning("option %r is deprecated and ignored", key)
            continue
        if key not in OPTIONS:
            log.info("ignoring unknown option %r", key)
            continue
        if value is None:
            continue
        out[key] = coerce(key, value)
    return out


def merge(params: dict | None, request: dict | None, context_length: int = 4096) -> dict:
    """Defaults <- model params layer <- request options; every known option present and typed."""
    merged = {key: (list(default) if isinstance(default, list) else default) for key, (_, default) in OPTIONS.items()}
    merged["num_ctx"] = context_length
    merged.update(clean(params))
    merged.update(clean(request))
    return merged


def load_options(opts: dict, model_context: int | None, threads: int | None = None) -> dict:
    """The options a runner is loaded with: context capped at the model's trained length, as Ollama does."""
    n_ctx = max(int(opts["num_ctx"]), 1)
    if model_context and n_ctx > model_context:
        n_ctx = model_context
    n_thread = int(opts["num_thread"]) or threads or os.cpu_count() or 1
    return {
        "num_ctx": n_ctx,
        "num_batch": max(1, min(int(opts["num_batch"]), n_ctx)),
        "num_thread": n_thread,
        "use_mmap": bool(opts["use_mmap"]),
    }


def sampling_options(opts: dict) -> dict:
    """The per-request options the runner's sampler and stop logic need."""
    keys = (
        "num_keep", "seed", "num_predict", "top_k", "top_p", "min_p", "typical_p", "repeat_last_n",
        "temperature", "repeat_penalty", "presence_penalty", "frequency_penalty", "stop",
    )
    return {key: opts[key] for key in keys}
