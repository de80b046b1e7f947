"""Validates a GGUF LoRA adapter against its base model before create accepts it.

Why: llama-cpp-python 0.3.36 reports a wrong-architecture or wrong-shape adapter as loaded and the next decode
segfaults. The engine re-checks at load time (service/engine/validate.py), but a model that can never load
should not be created at all: create answers 400 `invalid adapter: <why>` instead.

The checks mirror llama.cpp's own (src/llama-adapter.cpp), using only the GGUF headers (no tensor data is
read): the file is a GGUF of general.type "adapter" and adapter.type "lora"; its general.architecture is the
base's; every tensor is `<base tensor>.lora_a` or `.lora_b`, both halves present, 2-D; the base tensor
exists and is 2-D; and the shapes chain. In GGUF order (innermost first) a base weight is [n_in, n_out],
lora_a is [n_in, r] and lora_b is [r, n_out]; for token_embd llama.cpp expects A and B swapped
(lora_a [r, n_vocab], lora_b [r, n_embd]) because embeddings are looked up rather than multiplied. A base
without output.weight reuses token_embd as its output projection, and llama.cpp then applies the token_embd
LoRA to that matrix product in the wrong layout and aborts (measured), so such a pair is refused.
"""

from __future__ import annotations

from pathlib import Path

from corral.store.errors import InvalidArgument
from corral.store.gguf_info import GGUFInfo, read_gguf

_SUFFIXES = (".lora_a", ".lora_b")


def _invalid(why: str) -> InvalidArgument:
    return InvalidArgument(f"invalid adapter: {why}")


def _read(path: Path, what: str) -> GGUFInfo:
    try:
        return read_gguf(path)
    except InvalidArgument as exc:
        raise _invalid(f"{what}: {exc.message}") from None
    except (OSError, ValueError, IndexError, UnicodeDecodeError) as exc:
        raise _invalid(f"{what}: cannot read GGUF header: {exc}") from None


def validate_adapter(base: Path, adapter: Path) -> None:
    """Returns if `adapter` is a LoRA that llama.cpp can apply to `base`; else InvalidArgument with why."""
    info = _read(Path(adapter), "adapter")
    if info.general_type != "adapter":
        raise _invalid(f'general.type is "{info.general_type}", not "adapter"')
    kind = info.kv.get("adapter.type")
    if kind != "lora":
        raise _invalid(f'adapter.type is "{kind}", only "lora" is supported')
    model = _read(Path(base), "base model")
    if info.architecture != model.architecture:
        raise _invalid(
            f'adapter architecture "{info.architecture}" does not match the base model\'s "{model.architecture}"'
        )
    check_tensors({t.name: list(t.shape) for t in info.tensors}, {t.name: list(t.shape) for t in model.tensors})


def check_tensors(adapter: dict[str, list[int]], base: dict[str, list[int]]) -> None:
    """Shape rules for GGUF-ordered shapes (see the module docstring); InvalidArgument on the first misfit."""
    pairs: dict[str, dict[str, list[int]]] = {}
    for name, shape in adapter.items():
        suffix = next((s for s in _SUFFIXES if name.endswith(s)), None)
        if suffix is None:
            raise _invalid(f'unexpected tensor "{name}" (only .lora_a/.lora_b tensors are allowed)')
        pairs.setdefault(name[: -len(suffix)], {})[suffix] = shape
    if not pairs:
        raise _invalid("no LoRA tensors")
    for target, halves in sorted(pairs.items()):
        a, b = halves.get(".lora_a"), halves.get(".lora_b")
        if a is None or b is None:
            missing = ".lora_a" if a is None else ".lora_b"
            raise _invalid(f'tensor "{target}{missing}" is missing')
        w = base.get(target)
        if w is None:
            raise _invalid(f'tensor "{target}" does not exist in the base model')
        if len(w) != 2 or len(a) != 2 or len(b) != 2:
            raise _invalid(f'tensor "{target}" is not a matrix')
        if target == "token_embd.weight":
            if "output.weight" not in base:
                raise _invalid('a LoRA on "token_embd.weight" cannot be applied to a base model with tied '
                               "output embeddings")
            ok = w[0] == b[1] and w[1] == a[1] and a[0] == b[0]
        else:
            ok = w[0] == a[0] and w[1] == b[1] and a[1] == b[0]
        if not ok or min(a + b) <= 0:
            raise _invalid(
                f'tensor "{target}" has shape {w} in the base model, which lora_a {a} and lora_b {b} do not fit'
            )
