"""Checks a model file (and its LoRA adapters) before llama.cpp is allowed to touch it.

Why: llama.cpp trusts its input. A truncated file can make it read past the end of the mapping, and
llama-cpp-python 0.3.36 reports a wrong-architecture or wrong-shape adapter as loaded, then segfaults on
the next decode. The runner's child process keeps the server alive either way, but a clear error before
loading is better than a dead runner: the GGUF header is parsed with the store's reader (no tensor data
is read), the tensor data must fit in the file, and adapters pass service/adapters.py's checks.
"""

from __future__ import annotations

import mmap
import os
import struct
from pathlib import Path

import gguf

from corral.store.errors import Internal, InvalidArgument
from corral.store.gguf_info import GGUFInfo, read_gguf


def tensor_bytes(info: GGUFInfo) -> int:
    """Bytes of tensor data the header promises (without alignment padding)."""
    total = 0
    for t in info.tensors:
        try:
            block, size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[t.type]]
        except KeyError:
            continue  # a type this gguf version does not know: llama.cpp decides
        total += t.n_elements // block * size
    return total


_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}  # GGUF scalar types
_STR, _ARR = 8, 9


def data_end(path: Path) -> int | None:
    """Bytes the file must have: the aligned start of the tensor data plus its furthest tensor's end.

    A skip-only walk of the header (values are not decoded), so it costs little even for a large
    vocabulary. None for big-endian files (rare; only the total size is checked then). Raises
    ValueError/struct.error on a malformed header.
    """
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        if struct.unpack_from("<I", buf, 4)[0] & 0xFFFF == 0:
            return None
        pos = 8
        q = struct.Struct("<Q").unpack_from
        i = struct.Struct("<I").unpack_from
        n_tensors, n_kv = q(buf, pos)[0], q(buf, pos + 8)[0]
        pos += 16
        alignment = 32

        def skip(vtype: int, pos: int) -> int:
            if vtype == _STR:
                return pos + 8 + q(buf, pos)[0]
            if vtype == _ARR:
                etype, count = i(buf, pos)[0], q(buf, pos + 4)[0]
                pos += 12
                if etype in _SIZES:
                    return pos + count * _SIZES[etype]
                for _ in range(count):
                    pos = skip(etype, pos)
                return pos
            return pos + _SIZES[vtype]

        for _ in range(n_kv):
            klen = q(buf, pos)[0]
            key = buf[pos + 8 : pos + 8 + klen]
            pos += 8 + klen
            vtype = i(buf, pos)[0]
            if key == b"general.alignment" and vtype == 4:
                alignment = i(buf, pos + 4)[0] or 32
            pos = skip(vtype, pos + 4)
        end = 0
        for _ in range(n_tensors):
            pos += 8 + q(buf, pos)[0]
            n_dims = i(buf, pos)[0]
            dims = struct.unpack_from(f"<{n_dims}Q", buf, pos + 4)
            ttype, offset = struct.unpack_from("<IQ", buf, pos + 4 + 8 * n_dims)
            pos += 4 + 8 * n_dims + 12
            block, size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(ttype)]
            n = 1
            for d in dims:
                n *= d
            end = max(end, offset + n // block * size)
        start = (pos + alignment - 1) // alignment * alignment
        return start + end


def _stat_key(path: Path) -> tuple[str, int, int]:
    st = os.stat(path)
    return str(path), st.st_size, st.st_mtime_ns


def check_model(path: Path, info: GGUFInfo | None = None) -> GGUFInfo:
    """The model's GGUF info (parsed now unless given); Internal if it cannot be a loadable model."""
    return _check_model(_stat_key(Path(path)), info)


def _check_model(key, info: GGUFInfo | None) -> GGUFInfo:
    path, size, _ = key
    if info is None:
        try:
            info = read_gguf(path)
        except InvalidArgument as exc:
            raise Internal(f"error loading model {path}: {exc.message}") from None
        except (OSError, ValueError, IndexError) as exc:  # struct errors from a cut header
            raise Internal(f"error loading model {path}: invalid GGUF file: {exc}") from None
    if not info.architecture:
        raise Internal(f"error loading model {path}: missing general.architecture")
    if info.general_type not in ("model", ""):
        raise Internal(f"error loading model {path}: file is a {info.general_type}, not a model")
    if not info.tensors:
        raise Internal(f"error loading model {path}: no tensors")
    try:
        need = data_end(Path(path)) or tensor_bytes(info)
    except (ValueError, KeyError, struct.error, OverflowError) as exc:
        raise Internal(f"error loading model {path}: invalid GGUF file: {exc}") from None
    if need > size:
        raise Internal(f"error loading model {path}: file is truncated ({size} bytes, tensors need {need})")
    return info


def check_adapter(adapter: Path, base_path: Path) -> None:
    """Internal unless `adapter` is a LoRA llama.cpp can apply to the base (service/adapters.py's rules,
    the same create uses; re-checked here because blobs can change or predate that check)."""
    from corral.service.convert.adapters import validate_adapter

    try:
        validate_adapter(Path(base_path), Path(adapter))
    except InvalidArgument as exc:
        raise Internal(f"error loading adapter {adapter}: {exc.message}") from None
    try:
        info = read_gguf(adapter)
    except (InvalidArgument, OSError, ValueError) as exc:
        raise Internal(f"error loading adapter {adapter}: {exc}") from None
    if tensor_bytes(info) > os.stat(adapter).st_size:
        raise Internal(f"error loading adapter {adapter}: file is truncated")
