"""Safetensors -> GGUF conversion for create's `files` (spec §9), in Python with numpy and the `gguf` package.

Why in-process Python: the conversion is a streaming rewrite of tensors (rename, permute, +1, cast to F16),
the same work llama.cpp's convert_hf_to_gguf.py does, without torch or transformers so the server keeps
its small dependency set. Memory stays at about one tensor: safetensors are memory-mapped and the GGUF is
written tensor by tensor (service/convert/base.py).

`files` maps the request's relative names ("model.safetensors", "config.json", "1_Pooling/config.json",
...) to blob paths; they are linked into a temporary folder with those names so each converter reads a
normal Hugging Face model folder. config.json's architectures[0] picks the converter. The output is F16
(1-D tensors F32); quantize it afterwards with service.convert.quantize.quantize when the request asks for it.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
from collections.abc import Generator
from pathlib import Path, PurePosixPath

from corral.service.convert.base import Converter, prepare, write_gguf
from corral.service.convert.bert import BertConverter
from corral.service.convert.decoder import LlamaConverter, Qwen2Converter
from corral.service.convert.gemma import Gemma2Converter, Gemma3Converter, GemmaConverter
from corral.service.convert.safetensors import index_tensors
from corral.store.errors import Internal, InvalidArgument

ARCHITECTURES: dict[str, type[Converter]] = {
    "LlamaForCausalLM": LlamaConverter,
    "MistralForCausalLM": LlamaConverter,
    "Qwen2ForCausalLM": Qwen2Converter,
    "GemmaForCausalLM": GemmaConverter,
    "Gemma2ForCausalLM": Gemma2Converter,
    "Gemma3ForCausalLM": Gemma3Converter,
    "Gemma3ForConditionalGeneration": Gemma3Converter,
    "BertModel": BertConverter,
    "BertForMaskedLM": BertConverter,
}


def _link_folder(files: dict[str, Path], where: Path) -> Path:
    """A temporary folder holding each file under its relative name (symlinks, copies if links fail)."""
    folder = Path(tempfile.mkdtemp(prefix="convert-", dir=where))
    try:
        for rel, src in files.items():
            parts = PurePosixPath(rel).parts
            if not parts or rel.startswith("/") or ".." in parts or "\\" in rel:
                raise InvalidArgument("file path must be relative")
            dst = folder.joinpath(*parts)
            dst.parent.mkdir(parents=True, exist_ok=True)
            src = Path(src)
            if not src.is_file():
                raise Internal(f"open {src}: no such file or directory")
            try:
                os.symlink(src.resolve(), dst)
            except OSError:
                shutil.copyfile(src, dst)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return folder


def _converter(folder: Path) -> Converter:
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise InvalidArgument("unknown architecture")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidArgument(f"invalid config.json: {exc}") from None
    archs = config.get("architectures") if isinstance(config, dict) else None
    if not archs:
        raise InvalidArgument("unknown architecture")
    cls = ARCHITECTURES.get(archs[0])
    if cls is None:
        raise InvalidArgument(
            f'unsupported architecture "{archs[0]}" - supported architectures are {", ".join(ARCHITECTURES)}'
        )
    tensors = index_tensors(folder)
    if not tensors:
        raise InvalidArgument("no files provided to convert")
    return cls(folder, config, tensors)


def convert(files: dict[str, Path], out_path: Path,
            cancel: threading.Event | None = None) -> Generator[dict, None, None]:
    """Converts a safetensors model to an F16 GGUF at `out_path`, yielding create status lines.

    Request errors (no config, unknown architecture or tokenizer, bad headers) come before the first yield:
    `{"status": "converting model"}`. Later yields add total/completed bytes while tensors are written.
    On any failure `out_path` is removed.
    """
    if not any(name.endswith(".safetensors") for name in files):
        raise InvalidArgument("no files provided to convert")
    out_path = Path(out_path)
    folder = _link_folder(files, out_path.parent)
    try:
        writer, plans = prepare(_converter(folder), out_path)
        yield {"status": "converting model"}
        yield from write_gguf(writer, plans, cancel)
    except BaseException:
        out_path.unlink(missing_ok=True)
        raise
    finally:
        shutil.rmtree(folder, ignore_errors=True)


__all__ = ["ARCHITECTURES", "convert"]
