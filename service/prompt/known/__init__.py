"""Known chat templates: a GGUF's Jinja `tokenizer.chat_template` -> a Go template and its stop parameters.

Why: a model created from a GGUF downloaded from Hugging Face carries only its Jinja chat template. Ollama
(spec §5 create, "Template autodetection") compares it with the Jinja templates of well-known model
families and, when one is close (Levenshtein distance under 100), stores that family's Go template and a
params layer with its stop strings, so the model chats as its family expects and show reports both.
Where none is close, the model keeps no template layer and its own Jinja template is rendered instead
(service/prompt/prompts.py).

The data lives next to this file: `index.json` lists reference Jinja templates (several per family,
as published with the models: ChatML, Qwen, Llama 2, Llama 3, Mistral, Gemma/Gemma 3, Phi-3, DeepSeek,
Command-R, Zephyr, Vicuna, Alpaca, OpenChat), `<name>.gotmpl` is the family's Go template and
`<name>.json` its parameters ({"stop": [...]}).
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
MAX_DISTANCE = 100  # Ollama's threshold: a template this far (or farther) from every reference is unknown


@dataclass(frozen=True)
class KnownTemplate:
    name: str
    template: str  # the Go template
    parameters: dict  # {"stop": [...]}, or {} when the family has none


@dataclass(frozen=True)
class _Reference:
    name: str
    jinja: str
    codes: np.ndarray  # the Jinja text as code points, for the distance


@functools.cache
def _references() -> tuple[_Reference, ...]:
    entries = json.loads((HERE / "index.json").read_text(encoding="utf-8"))
    return tuple(_Reference(e["name"], e["template"], _codes(e["template"])) for e in entries)


@functools.cache
def load(name: str) -> KnownTemplate:
    """The named family's Go template (line endings normalised) and parameters."""
    text = (HERE / f"{name}.gotmpl").read_text(encoding="utf-8").replace("\r\n", "\n")
    params_path = HERE / f"{name}.json"
    params = json.loads(params_path.read_text(encoding="utf-8")) if params_path.is_file() else {}
    return KnownTemplate(name, text, params)


def names() -> list[str]:
    """The known families, in index order."""
    return list(dict.fromkeys(ref.name for ref in _references()))


def _codes(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)


def distance(a: str, b: str, limit: int | None = None) -> int:
    """Levenshtein distance between two texts; with `limit`, any value >= limit means "at least limit"
    (the computation stops early once every path costs that much)."""
    return _distance(_codes(a), _codes(b), limit)


def _distance(a: np.ndarray, b: np.ndarray, limit: int | None) -> int:
    if len(a) < len(b):
        a, b = b, a
    if limit is not None and len(a) - len(b) >= limit:
        return len(a) - len(b)
    if len(b) == 0:
        return len(a)
    cols = np.arange(len(b) + 1, dtype=np.int64)
    row = cols.copy()
    for i, ch in enumerate(a, start=1):
        # substitution/match and deletion from the previous row, then insertions as a running minimum:
        # new[j] = min over k <= j of (base[k] + j - k)
        base = np.empty_like(row)
        base[0] = i
        np.minimum(row[:-1] + (b != ch), row[1:] + 1, out=base[1:])
        row = np.minimum.accumulate(base - cols) + cols
        if limit is not None and row.min() >= limit:
            return int(row.min())  # every path already costs this much: a lower bound of the distance
    return int(row[-1])


def named(jinja: str) -> KnownTemplate | None:
    """The known family whose reference Jinja template is closest to `jinja`, if closer than 100 edits
    (Ollama's template.Named); None for an unknown template."""
    if not jinja:
        return None
    codes = _codes(jinja)
    best, score = None, MAX_DISTANCE
    for ref in sorted(_references(), key=lambda r: abs(len(r.codes) - len(codes))):
        d = _distance(codes, ref.codes, score)
        if d < score:
            best, score = ref, d
            if d == 0:
                break
    return load(best.name) if best is not None else None
