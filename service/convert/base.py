"""The per-architecture converter interface and the streaming GGUF writer they share.

Why this shape: a converter only decides names, metadata and per-tensor transforms; the writer first lays out
every tensor's name, shape and type (GGUF puts all tensor infos before the data), then loads, transforms and
writes each tensor in blocks of rows (about 16 MB of float32), so peak memory is one block, not the model
(a whole tensor only where the transform needs it: the per-head Q/K permutation). Names go through gguf's
own TensorNameMap (the table llama.cpp's converter uses), so the output uses exactly llama.cpp's names.

Types follow Ollama/llama.cpp: matrices F16, 1-D tensors (norms, biases) F32, and any tensor a subclass lists
in `keep_f32` (e.g. BERT's position and token-type embeddings, which llama.cpp needs in F32).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np

from corral.service.convert.safetensors import TensorRef
from corral.store.errors import Cancelled, InvalidArgument

# Tensors the converters drop silently: buffers and heads llama.cpp has no use for.
IGNORED_SUFFIXES = ("rotary_emb.inv_freq", "position_ids", "attn.masked_bias", "attn.bias")


BLOCK_BYTES = 16 << 20


@dataclass
class Plan:
    """One output tensor: GGUF name, numpy shape, output dtype, and make(start, stop) giving rows
    [start, stop) of its data; chunked=False when only the whole tensor can be made at once."""

    name: str
    shape: tuple[int, ...]
    dtype: type
    make: Callable[[int, int], np.ndarray]
    chunked: bool = True

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize

    def blocks(self) -> Iterator[tuple[int, int]]:
        rows = self.shape[0] if self.shape else 1
        row_bytes = max(1, int(np.prod(self.shape[1:], dtype=np.int64)) * 4)
        step = rows if not self.chunked else max(1, BLOCK_BYTES // row_bytes)
        for start in range(0, rows, step):
            yield start, min(rows, start + step)


class Converter:
    """Base for one Hugging Face architecture; subclasses set `arch` and override the hooks."""

    arch: gguf.MODEL_ARCH = gguf.MODEL_ARCH.LLAMA
    keep_f32: tuple[str, ...] = ()

    def __init__(self, model_dir: Path, config: dict, tensors: dict[str, TensorRef]):
        self.dir = model_dir
        self.config = config
        # Multimodal configs keep the text model's parameters in text_config.
        self.hp = {**config, **config.get("text_config", {})}
        self.tensors = tensors
        self.n_layer = int(self.hp.get("num_hidden_layers") or self.hp.get("n_layer") or 0)
        self.name_map = gguf.get_tensor_name_map(self.arch, self.n_layer)
        self.n_vocab = 0

    @property
    def arch_name(self) -> str:
        return gguf.MODEL_ARCH_NAMES[self.arch]

    # --- hooks -----------------------------------------------------------------------------------------
    def write_params(self, w: gguf.GGUFWriter) -> None:
        raise NotImplementedError

    def write_vocab(self, w: gguf.GGUFWriter) -> None:
        raise NotImplementedError

    def hf_name(self, name: str) -> str | None:
        """The HF name to map (after stripping wrappers), or None to drop the tensor."""
        return None if name.endswith(IGNORED_SUFFIXES) else name

    def transform(self, hf: str, out: str, data: np.ndarray) -> np.ndarray:
        """Rows of a tensor (all of them unless row_safe) -> what llama.cpp expects."""
        return data

    def row_safe(self, hf: str, out: str) -> bool:
        """Whether transform works on any block of rows (False: it needs the whole tensor)."""
        return True

    def out_shape(self, hf: str, out: str, shape: tuple[int, ...]) -> tuple[int, ...]:
        return shape

    def extra_plans(self) -> list[Plan]:
        return []

    # --- shared ----------------------------------------------------------------------------------------
    def map_name(self, hf: str) -> str:
        out = self.name_map.get_name(hf, try_suffixes=(".weight", ".bias"))
        if out is None:
            raise InvalidArgument(f'unsupported tensor "{hf}" for architecture {self.arch_name}')
        return out

    def out_dtype(self, out: str, shape: tuple[int, ...]) -> type:
        if len(shape) <= 1 or out.startswith(self.keep_f32):
            return np.float32
        return np.float16

    def plans(self) -> list[Plan]:
        plans: list[Plan] = []
        for name, ref in self.tensors.items():
            hf = self.hf_name(name)
            if hf is None:
                continue
            out = self.map_name(hf)
            shape = self.out_shape(hf, out, ref.shape)
            plans.append(Plan(out, shape, self.out_dtype(out, shape), self._maker(hf, out, ref),
                              self.row_safe(hf, out)))
        plans.extend(self.extra_plans())
        seen: set[str] = set()
        for p in plans:
            if p.name in seen:
                raise InvalidArgument(f"duplicate tensor {p.name} after conversion")
            seen.add(p.name)
        return plans

    def _maker(self, hf: str, out: str, ref: TensorRef) -> Callable[[int, int], np.ndarray]:
        return lambda start, stop: self.transform(hf, out, ref.load(start, stop).astype(np.float32, copy=False))

    def vocab_rows(self, hf: str, shape: tuple[int, ...]) -> tuple[int, ...]:
        """Embedding/output rows cut to the tokenizer's vocabulary (some configs pad vocab_size); loading
        only the planned rows drops the padding rows."""
        if self.n_vocab and shape and shape[0] > self.n_vocab:
            return (self.n_vocab, *shape[1:])
        if self.n_vocab and shape and shape[0] < self.n_vocab:
            raise InvalidArgument(f"tokenizer has {self.n_vocab} tokens but {hf} has only {shape[0]} rows")
        return shape


def prepare(conv: Converter, out_path: Path) -> tuple[gguf.GGUFWriter, list[Plan]]:
    """Metadata, vocabulary and the tensor layout; raises the request's errors before anything is written."""
    w = gguf.GGUFWriter(str(out_path), conv.arch_name, use_temp_file=False)
    w.add_type("model")
    conv.write_vocab(w)  # first: the vocabulary size bounds the embedding rows
    conv.write_params(w)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    plans = conv.plans()
    for p in plans:
        w.add_tensor_info(p.name, p.shape, np.dtype(p.dtype), p.nbytes)
    return w, plans


def write_gguf(w: gguf.GGUFWriter, plans: list[Plan], cancel: threading.Event | None) -> Iterator[dict]:
    """Writes the prepared model block by block; yields {"status": "converting model", total, completed}
    at most every 0.25 s. Tensor data follows GGUF's layout: aligned start, each tensor padded to alignment
    (what GGUFWriter.write_tensors_to_file does, done here in blocks)."""
    try:
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_ti_data_to_file()
        assert w.fout is not None  # the header writes opened it
        fout = w.fout[0]
        w.write_padding(fout, fout.tell())
        total, done, last = sum(p.nbytes for p in plans), 0, time.monotonic()
        for p in plans:
            for start, stop in p.blocks():
                if cancel is not None and cancel.is_set():
                    raise Cancelled("context canceled")
                data: np.ndarray = np.ascontiguousarray(p.make(start, stop), dtype=p.dtype)
                want = (stop - start, *p.shape[1:]) if p.shape else ()
                if data.shape != want:
                    raise InvalidArgument(f"tensor {p.name} has shape {data.shape}, expected {want}")
                data.tofile(fout)
                done += data.nbytes
                if time.monotonic() - last >= 0.25:
                    last = time.monotonic()
                    yield {"status": "converting model", "total": total, "completed": done}
            w.write_padding(fout, p.nbytes)
        fout.flush()
    finally:
        w.close()
