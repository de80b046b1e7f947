"""Reads safetensors files one tensor at a time, without torch and without loading a whole model.

Why: a model to convert may be many gigabytes and the machine has little memory. The safetensors format is
an 8-byte little-endian header length, a JSON header {name: {dtype, shape, data_offsets}} and raw
little-endian data; each tensor is exposed as a read-only numpy memmap of its byte range, so only the
tensor being converted is paged in. BF16 (which numpy lacks) is widened to float32 by a 16-bit shift.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from corral.store.errors import InvalidArgument

_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": np.uint16,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_,
}
_MAX_HEADER = 100 * 1024 * 1024


@dataclass(frozen=True)
class TensorRef:
    """Where one tensor lives: file, dtype name, numpy shape, absolute byte offset and length."""

    path: Path
    dtype: str
    shape: tuple[int, ...]
    offset: int
    nbytes: int

    def load(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Rows [start, stop) of the tensor (first axis) as float32 (floats) or its own dtype (ints).

        Only that byte range is mapped, so converting a large tensor in row blocks keeps one block resident.
        """
        np_dtype = _DTYPES[self.dtype]
        shape = self.shape or (1,)
        stop = shape[0] if stop is None else min(stop, shape[0])
        row = int(np.prod(shape[1:], dtype=np.int64))
        itemsize = 2 if self.dtype == "BF16" else np.dtype(np_dtype).itemsize
        out_shape = (max(stop - start, 0), *shape[1:])
        count = out_shape[0] * row
        if count == 0:
            return np.zeros(out_shape, dtype=np.float32).reshape(out_shape if self.shape else ())
        raw = np.memmap(self.path, dtype=np.dtype(np_dtype).newbyteorder("<"), mode="r",
                        offset=self.offset + start * row * itemsize, shape=(count,))
        if self.dtype == "BF16":
            data = (raw.astype(np.uint32) << 16).view(np.float32)
        elif self.dtype in ("F16", "F64"):
            data = raw.astype(np.float32)
        else:
            data = np.array(raw)  # a copy, so the mapping is released with `raw`
        return data.reshape(out_shape if self.shape else ())


def read_header(path: Path) -> dict[str, TensorRef]:
    """The tensors of one safetensors file; InvalidArgument if it is not one."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) != 8:
            raise InvalidArgument(f"invalid safetensors file {path.name}: too short")
        (n,) = struct.unpack("<Q", head)
        if n > min(size - 8, _MAX_HEADER):
            raise InvalidArgument(f"invalid safetensors file {path.name}: bad header length")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InvalidArgument(f"invalid safetensors file {path.name}: {exc}") from None
    base = 8 + n
    out: dict[str, TensorRef] = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape = meta["dtype"], tuple(int(d) for d in meta["shape"])
            begin, end = (int(x) for x in meta["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise InvalidArgument(f"invalid safetensors file {path.name}: bad entry for {name}") from None
        if dtype not in _DTYPES:
            raise InvalidArgument(f"unsupported safetensors dtype {dtype} for tensor {name}")
        itemsize = 2 if dtype == "BF16" else np.dtype(_DTYPES[dtype]).itemsize
        count = int(np.prod(shape, dtype=np.int64)) if shape else 1
        if end - begin != count * itemsize or base + end > size or begin < 0:
            raise InvalidArgument(f"invalid safetensors file {path.name}: tensor {name} is out of bounds")
        out[name] = TensorRef(path, dtype, shape, base + begin, end - begin)
    return out


def index_tensors(model_dir: Path) -> dict[str, TensorRef]:
    """All tensors of the model's top-level *.safetensors files (sub-module folders such as 2_Dense are
    not part of the transformer and are skipped)."""
    tensors: dict[str, TensorRef] = {}
    for path in sorted(Path(model_dir).glob("*.safetensors")):
        for name, ref in read_header(path).items():
            if name in tensors:
                raise InvalidArgument(f"duplicate tensor {name} in {path.name}")
            tensors[name] = ref
    return tensors
