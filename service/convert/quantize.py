"""Quantizes an F32/F16/BF16 GGUF model with llama.cpp's own quantizer, in a child process.

Why a child: `llama_model_quantize` is C code working on user-supplied files; if it aborts or segfaults, only
the child dies and create reports an error instead of the server vanishing. The child is started with the
`spawn` context (a fork of a threaded gRPC server is unsafe) and killed if the client cancels.

Why a log callback: llama.cpp prints `[  i/  N] <tensor name> ...` as it starts each tensor. The child
installs its own log callback, parses those lines and sends (index, name) to the parent over a pipe; the
parent turns them into Ollama's progress lines, `completed`/`total` counted in bytes of source tensor data
(`quantizing F16 model to Q4_K_M`, digest "0000000000000000000"), then `verifying conversion`.

Types: every llama.cpp type users know from Ollama <= 0.5 and llama-quantize (K-quants, legacy quants, Q8_0)
plus F32/F16/BF16, case-insensitive, `Q4_K`/`Q3_K`/`Q5_K` meaning the `_M` variant. K-quants need tensor
rows that are a multiple of 256; llama.cpp quietly falls back to Q5_0/Q8_0 for rows that are not.
"""

from __future__ import annotations

import multiprocessing
import os
import re
import shutil
import threading
import time
from collections.abc import Generator
from pathlib import Path

import gguf

from corral.store.errors import Cancelled, Internal, InvalidArgument
from corral.store.gguf_info import read_gguf

# name -> llama_ftype (llama.h); the order is the one error messages list.
QUANT_TYPES: dict[str, int] = {
    "F32": 0, "F16": 1, "BF16": 32, "Q8_0": 7, "Q6_K": 18, "Q5_K_M": 17, "Q5_K_S": 16, "Q5_1": 9,
    "Q5_0": 8, "Q4_K_M": 15, "Q4_K_S": 14, "Q4_1": 3, "Q4_0": 2, "Q3_K_L": 13, "Q3_K_M": 12,
    "Q3_K_S": 11, "Q2_K": 10,
}
ALIASES = {"Q4_K": "Q4_K_M", "Q3_K": "Q3_K_M", "Q5_K": "Q5_K_M"}
SOURCE_TYPES = ("F32", "F16", "BF16")
PROGRESS_DIGEST = "0000000000000000000"
_TENSOR_LINE = re.compile(r"\[\s*(\d+)/\s*(\d+)\]\s+(\S+)")


def normalize_type(text: str) -> str:
    """The canonical type name for `text` (case-insensitive, aliases resolved); InvalidArgument if unknown."""
    name = (text or "").strip().upper()
    name = ALIASES.get(name, name)
    if name not in QUANT_TYPES:
        raise InvalidArgument(
            f"unsupported quantization type {name or text} - supported types are {', '.join(QUANT_TYPES)}"
        )
    return name


def _tensor_nbytes(type_name: str, n_elements: int) -> int:
    try:
        block, size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[type_name]]
    except KeyError:
        return 0
    return n_elements // block * size


def quantize(src: Path, dst: Path, type_name: str,
             cancel: threading.Event | None = None) -> Generator[dict, None, None]:
    """Writes `src` quantized to `type_name` at `dst`, yielding Ollama progress dicts.

    Raises InvalidArgument for an unknown type, Internal for a source that is not F32/F16/BF16 (Ollama
    answers that in-stream with status 500) or a failed quantization, Cancelled if `cancel` is set. Errors
    about the request are raised before the first yield. Quantizing to the source's own type copies it.
    """
    target = normalize_type(type_name)
    info = read_gguf(src)
    if info.file_type not in SOURCE_TYPES:
        raise Internal("quantization is only supported for F16, BF16 and F32 models")
    if info.file_type == target:
        shutil.copyfile(src, dst)
        return
    sizes = {t.name: _tensor_nbytes(t.type, t.n_elements) for t in info.tensors}
    total = sum(sizes.values())
    status = f"quantizing {info.file_type} model to {target}"

    ctx = multiprocessing.get_context("spawn")
    reader, writer = ctx.Pipe(duplex=False)
    proc = ctx.Process(
        target=_child, args=(str(src), str(dst), QUANT_TYPES[target], os.cpu_count() or 1, writer),
        name="corral-quantize", daemon=True,
    )
    proc.start()
    writer.close()
    done: set[str] = set()
    current: str | None = None
    result: tuple | None = None
    last_sent = -1.0
    completed = sent = 0
    try:
        yield {"status": status, "digest": PROGRESS_DIGEST, "total": total, "completed": 0}
        while result is None:
            if cancel is not None and cancel.is_set():
                raise Cancelled("context canceled")
            if not reader.poll(0.05):
                if not proc.is_alive() and not reader.poll(0):
                    break
                continue
            try:
                msg = reader.recv()
            except EOFError:
                break
            if msg[0] == "tensor":
                if current is not None:
                    done.add(current)
                current = msg[1]
                completed = sum(sizes.get(n, 0) for n in done)
                now = time.monotonic()
                if completed != sent and now - last_sent >= 0.05:
                    last_sent, sent = now, completed
                    yield {"status": status, "digest": PROGRESS_DIGEST, "total": total, "completed": completed}
            else:
                result = msg
        proc.join(timeout=30)
        if result is None or result[0] != "done" or result[1] != 0:
            detail = _failure(proc.exitcode, result)
            raise Internal(f"quantization failed: {detail}")
        yield {"status": status, "digest": PROGRESS_DIGEST, "total": total, "completed": total}
        yield {"status": "verifying conversion"}
        _verify(Path(dst), target, len(info.tensors))
    except BaseException:
        Path(dst).unlink(missing_ok=True)
        raise
    finally:
        if proc.is_alive():
            proc.kill()
            proc.join(timeout=5)
        reader.close()


def _failure(exitcode: int | None, result: tuple | None) -> str:
    if result is not None and result[0] == "error":
        return result[1]
    tail = (result[2] if result is not None and len(result) > 2 else "").strip().splitlines()
    why = tail[-1] if tail else ""
    if exitcode is not None and exitcode < 0:
        return f"quantizer crashed (signal {-exitcode}){': ' + why if why else ''}"
    if result is not None:
        return f"llama_model_quantize returned {result[1]}{': ' + why if why else ''}"
    return f"quantizer exited with status {exitcode}"


def _verify(dst: Path, target: str, n_tensors: int) -> None:
    """The output must parse, say the target file type and keep every tensor."""
    try:
        out = read_gguf(dst)
    except (InvalidArgument, OSError, ValueError) as exc:
        raise Internal(f"quantization failed: output is not a valid GGUF file: {exc}") from None
    if out.file_type != target:
        raise Internal(f"quantization failed: output file type is {out.file_type}, expected {target}")
    if len(out.tensors) != n_tensors:
        raise Internal(f"quantization failed: output has {len(out.tensors)} tensors, expected {n_tensors}")


def _child(src: str, dst: str, ftype: int, nthread: int, conn) -> None:
    """Runs in the spawned process: quantize, reporting each tensor as llama.cpp starts it."""
    import ctypes

    import llama_cpp

    tail: list[str] = []

    @llama_cpp.llama_log_callback
    def on_log(level, text, user_data):
        s = text.decode("utf-8", "replace") if text else ""
        tail.append(s)
        del tail[:-40]
        m = _TENSOR_LINE.search(s)
        if m:
            try:
                conn.send(("tensor", m.group(3), int(m.group(1)), int(m.group(2))))
            except OSError:
                pass

    llama_cpp.llama_log_set(on_log, ctypes.c_void_p(0))
    try:
        params = llama_cpp.llama_model_quantize_default_params()
        params.ftype = ftype
        params.nthread = nthread
        rc = llama_cpp.llama_model_quantize(src.encode(), dst.encode(), ctypes.byref(params))
        conn.send(("done", int(rc), "".join(tail)[-2000:]))
    except Exception as exc:
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        conn.close()


__all__ = ["QUANT_TYPES", "normalize_type", "quantize"]
