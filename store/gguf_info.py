"""GGUF metadata: header, key/values and tensor infos, without reading tensor data.

Why: create, show, tags details, capability checks and adapter validation all need a model's metadata, and
model files are gigabytes. The file is memory-mapped and only the header region is touched, so a 4 GB
model is read in the time it takes to walk its vocabulary. gguf.GGUFReader was measured at 12.5 s on a
Llama-3-sized vocabulary (it builds a numpy view per array element), so this module walks the header
itself; it still uses the `gguf` package's enums for tensor type names.

Values are plain Python (what Ollama's JSON shows): strings decoded, arrays as lists, float32 scalars and
arrays rounded to their shortest float32 repr (1e-05, not 9.999999747378752e-06), like Go's float32 JSON.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType

from corral.store.errors import Internal, InvalidArgument

NOT_GGUF = "supplied file was not in GGUF format"

# llama.cpp's llama_ftype values and the names Ollama prints (config file_type, details.quantization_level).
FILE_TYPE_NAMES: dict[int, str] = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K",
    11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S", 17: "Q5_K_M",
    18: "Q6_K", 19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S", 22: "IQ3_XS", 23: "IQ3_XXS", 24: "IQ1_S",
    25: "IQ4_NL", 26: "IQ3_S", 27: "IQ3_M", 28: "IQ2_S", 29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M",
    32: "BF16", 36: "TQ1_0", 37: "TQ2_0", 38: "MXFP4",
}
FILE_TYPE_IDS: dict[str, int] = {v: k for k, v in FILE_TYPE_NAMES.items()}

# Tensor type -> file type name, for files without general.file_type (the dominant type decides).
_TENSOR_TO_FILE_TYPE = {
    "F32": "F32", "F16": "F16", "BF16": "BF16", "Q4_0": "Q4_0", "Q4_1": "Q4_1", "Q5_0": "Q5_0",
    "Q5_1": "Q5_1", "Q8_0": "Q8_0", "Q2_K": "Q2_K", "Q3_K": "Q3_K_M", "Q4_K": "Q4_K_M", "Q5_K": "Q5_K_M",
    "Q6_K": "Q6_K", "IQ2_XXS": "IQ2_XXS", "IQ2_XS": "IQ2_XS", "IQ3_XXS": "IQ3_XXS", "IQ1_S": "IQ1_S",
    "IQ4_NL": "IQ4_NL", "IQ3_S": "IQ3_S", "IQ2_S": "IQ2_S", "IQ4_XS": "IQ4_XS", "IQ1_M": "IQ1_M",
    "TQ1_0": "TQ1_0", "TQ2_0": "TQ2_0", "MXFP4": "MXFP4",
}

# GGUF value types: struct format for scalars, numpy dtype for arrays.
_SCALAR = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY, _FLOAT32 = 8, 9, 6


@dataclass(frozen=True)
class TensorInfo:
    name: str
    type: str  # ggml type name, e.g. "F32", "Q4_K"
    shape: list[int]  # GGUF order (innermost first), as Ollama shows it

    @property
    def n_elements(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


@dataclass
class GGUFInfo:
    architecture: str
    file_type: str
    parameter_count: int
    kv: dict[str, object]
    tensors: list[TensorInfo] = field(default_factory=list)
    general_type: str = "model"
    pooling: bool = False
    context_length: int | None = None
    embedding_length: int | None = None
    chat_template: str | None = None
    version: int = 3

    def model_info(self, verbose: bool = False) -> dict:
        """The show response's model_info (spec §5): no general.name / chat template, recount params,
        non-empty arrays null unless verbose."""
        out: dict[str, object] = {}
        for key, val in self.kv.items():
            if key in ("general.name", "tokenizer.chat_template"):
                continue
            if isinstance(val, list) and val and not verbose:
                val = None
            out[key] = val
        out["general.parameter_count"] = self.parameter_count
        return out

    def tensors_json(self) -> list[dict]:
        """The show response's tensors list."""
        return [{"name": t.name, "type": t.type, "shape": list(t.shape)} for t in self.tensors]


def _f32_shortest(values: np.ndarray) -> list[float]:
    """float32 values as the Python floats whose repr is the shortest float32 repr (Go's float32 JSON)."""
    return [float(s) for s in values.astype(np.float32).astype(str).tolist()]


class _Cursor:
    """Sequential little/big-endian reader over a memory map; raises Internal on truncation."""

    def __init__(self, buf, endian: str):
        self.buf, self.pos, self.e = buf, 0, endian
        self.size = len(buf)

    def need(self, n: int) -> None:
        if n < 0 or self.pos + n > self.size:
            raise Internal("invalid GGUF file: unexpected EOF")

    def unpack(self, fmt: str):
        s = struct.Struct(self.e + fmt)
        self.need(s.size)
        vals = s.unpack_from(self.buf, self.pos)
        self.pos += s.size
        return vals[0] if len(vals) == 1 else vals

    def string(self) -> str:
        n = self.unpack("Q")
        self.need(n)
        raw = self.buf[self.pos:self.pos + n]
        self.pos += n
        return raw.decode("utf-8", errors="replace")

    def strings(self, count: int) -> list[str]:
        buf, pos, size, out = self.buf, self.pos, self.size, []
        unpack_len = struct.Struct(self.e + "Q").unpack_from
        for _ in range(count):
            if pos + 8 > size:
                raise Internal("invalid GGUF file: unexpected EOF")
            (n,) = unpack_len(buf, pos)
            pos += 8
            if pos + n > size:
                raise Internal("invalid GGUF file: unexpected EOF")
            out.append(buf[pos:pos + n].decode("utf-8", errors="replace"))
            pos += n
        self.pos = pos
        return out

    def value(self, vtype: int):
        if vtype == _STRING:
            return self.string()
        if vtype == _ARRAY:
            etype, count = self.unpack("I"), self.unpack("Q")
            if etype == _STRING:
                return self.strings(count)
            if etype == _ARRAY:
                return [self.value(_ARRAY) for _ in range(count)]
            if etype not in _SCALAR:
                raise Internal(f"invalid GGUF file: unknown value type {etype}")
            dt = np.dtype(_SCALAR[etype]).newbyteorder(self.e)  # type: ignore[arg-type]  # "<" or ">"
            self.need(count * dt.itemsize)
            # a copy of the bytes, so no numpy view pins the mmap open
            arr = np.frombuffer(self.buf[self.pos:self.pos + count * dt.itemsize], dtype=dt)
            self.pos += count * dt.itemsize
            return _f32_shortest(arr) if etype == _FLOAT32 else arr.tolist()
        if vtype not in _SCALAR:
            raise Internal(f"invalid GGUF file: unknown value type {vtype}")
        val = self.unpack(_SCALAR[vtype])
        return _f32_shortest(np.array([val], np.float32))[0] if vtype == _FLOAT32 else val


def _type_name(t: int) -> str:
    try:
        return GGMLQuantizationType(t).name
    except ValueError:
        return str(t)


def _infer_file_type(tensors: list[TensorInfo]) -> str:
    """The file type of a file without general.file_type: the type holding most elements of 2-D+ tensors."""
    counts: dict[str, int] = {}
    for t in tensors:
        if len(t.shape) >= 2:
            counts[t.type] = counts.get(t.type, 0) + t.n_elements
    if not counts:
        return "F32" if tensors else "unknown"
    return _TENSOR_TO_FILE_TYPE.get(max(counts, key=lambda t: counts[t]), "unknown")


def is_gguf(path: str | Path) -> bool:
    """True if the file starts with the GGUF magic."""
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"GGUF"
    except OSError:
        return False


def read_gguf(path: str | Path) -> GGUFInfo:
    """Parses a GGUF file's metadata. Non-GGUF → InvalidArgument; corrupt GGUF → Internal."""
    with open(path, "rb") as f:
        if f.read(4) != b"GGUF":
            raise InvalidArgument(NOT_GGUF)
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            return _parse_header(mm)


def _parse_header(buf: mmap.mmap) -> GGUFInfo:
    if len(buf) < 8:  # the magic and nothing after it
        raise InvalidArgument(NOT_GGUF)
    (version,) = struct.unpack_from("<I", buf, 4)
    endian = "<"
    if version & 0xFFFF == 0 and version:  # a big-endian file read little-endian
        endian, version = ">", struct.unpack_from(">I", buf, 4)[0]
    if version not in (2, 3):
        raise InvalidArgument(NOT_GGUF)  # v1 (2023) used 32-bit counts; Ollama rejects it too
    cur = _Cursor(buf, endian)
    cur.pos = 8
    n_tensors, n_kv = cur.unpack("Q"), cur.unpack("Q")
    kv: dict[str, object] = {}
    for _ in range(n_kv):
        key = cur.string()
        kv[key] = cur.value(cur.unpack("I"))
    tensors = []
    for _ in range(n_tensors):
        name = cur.string()
        n_dims = cur.unpack("I")
        if n_dims > 8:
            raise Internal("invalid GGUF file: too many tensor dimensions")
        shape = [cur.unpack("Q") for _ in range(n_dims)]
        ttype = cur.unpack("I")
        cur.unpack("Q")  # data offset
        tensors.append(TensorInfo(name, _type_name(ttype), shape))

    arch = str(kv.get("general.architecture", ""))
    ft = kv.get("general.file_type")
    file_type = FILE_TYPE_NAMES.get(ft, "unknown") if isinstance(ft, int) else _infer_file_type(tensors)

    def _int(key):
        v = kv.get(key)
        return v if isinstance(v, int) and not isinstance(v, bool) else None

    template = kv.get("tokenizer.chat_template")
    return GGUFInfo(
        architecture=arch,
        file_type=file_type,
        parameter_count=sum(t.n_elements for t in tensors),
        kv=kv,
        tensors=tensors,
        general_type=str(kv.get("general.type") or "model"),
        pooling=f"{arch}.pooling_type" in kv,
        context_length=_int(f"{arch}.context_length"),
        embedding_length=_int(f"{arch}.embedding_length"),
        chat_template=template if isinstance(template, str) else None,
        version=version,
    )


def human_parameter_count(n: int) -> str:
    """Ollama's format.HumanNumber, used as model_type / parameter_size: 8B, 3.2B, 15.21M, 22K."""
    if n >= 1_000_000_000:
        x = n / 1e9
        return f"{x:.0f}B" if x == int(x) else f"{x:.1f}B"
    if n >= 1_000_000:
        x = n / 1e6
        return f"{x:.0f}M" if x == int(x) else f"{x:.2f}M"
    if n >= 1_000:
        return f"{n / 1e3:.0f}K"
    return str(n)
