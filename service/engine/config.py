"""Server-wide engine settings read from Ollama's environment variables (spec §10).

Why a module of its own: the scheduler, the options merge and the benchmarks all need the same defaults
(keep-alive, how many models stay loaded, parallel slots, queue bound, default context), and Ollama's
rules for reading them (values trimmed of spaces and quotes, Go duration strings or bare seconds for
OLLAMA_KEEP_ALIVE) are easy to get subtly wrong in several places.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass

FOREVER = None  # a keep-alive of None means "never expire"

_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_PIECE = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


def go_duration(text: str) -> float:
    """Seconds of a Go duration string ("5m", "1h30m", "-1s", "0"); ValueError otherwise."""
    s = text.strip()
    sign = -1.0 if s.startswith("-") else 1.0
    s = s.lstrip("+-")
    if s == "0":
        return 0.0
    total, pos = 0.0, 0
    if not s:
        raise ValueError(f'time: invalid duration "{text}"')
    while pos < len(s):
        match = _PIECE.match(s, pos)
        if not match:
            raise ValueError(f'time: invalid duration "{text}"')
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    return sign * total


def keep_alive_seconds(value: float | None) -> float | None:
    """Normalises a keep-alive: negative (or absurdly large) means forever (None), else seconds >= 0."""
    if value is None or value < 0 or not math.isfinite(value) or value > 1e15:
        return FOREVER
    return float(value)


def _env(name: str) -> str:
    return os.environ.get(name, "").strip().strip("\"'").strip()


def _env_int(name: str, default: int) -> int:
    raw = _env(name)
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        return default


def env_keep_alive(default: float = 300.0) -> float | None:
    """OLLAMA_KEEP_ALIVE: a Go duration or integer seconds; negative = forever; bad values = default."""
    raw = _env("OLLAMA_KEEP_ALIVE")
    if not raw:
        return default
    try:
        return keep_alive_seconds(float(int(raw)))
    except ValueError:
        pass
    try:
        return keep_alive_seconds(go_duration(raw))
    except ValueError:
        return default


@dataclass
class EngineConfig:
    """Defaults the scheduler and the options merge start from."""

    keep_alive: float | None = 300.0  # seconds; None = forever
    max_loaded_models: int = 3  # OLLAMA_MAX_LOADED_MODELS 0 = auto = 3 on CPU
    num_parallel: int = 1
    max_queue: int = 512
    context_length: int = 4096  # OLLAMA_CONTEXT_LENGTH 0 = automatic = 4096 without a GPU
    memory_budget: int | None = None  # bytes; None = only max_loaded_models limits what stays loaded
    threads: int | None = None  # default n_threads; None = os.cpu_count()

    @classmethod
    def from_env(cls) -> "EngineConfig":
        max_loaded = _env_int("OLLAMA_MAX_LOADED_MODELS", 0)
        parallel = _env_int("OLLAMA_NUM_PARALLEL", 1)
        queue = _env_int("OLLAMA_MAX_QUEUE", 512)
        context = _env_int("OLLAMA_CONTEXT_LENGTH", 0)
        budget = _env_int("CORRAL_MAX_MEMORY", 0)
        return cls(
            keep_alive=env_keep_alive(),
            max_loaded_models=max_loaded if max_loaded > 0 else 3,
            num_parallel=parallel if parallel > 0 else 1,
            max_queue=queue if queue > 0 else 512,
            context_length=context if context > 0 else 4096,
            memory_budget=budget if budget > 0 else None,
        )
