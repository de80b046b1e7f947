"""Reads a SentencePiece `tokenizer.model` (a serialized ModelProto) without the sentencepiece package.

Why: the converter needs only each piece's text, score and type, plus the normalizer's add_dummy_prefix flag,
and the protobuf wire format for those few fields is simple enough to walk by hand; this keeps the
sentencepiece wheel out of the server's dependencies (the tests use the real package to cross-check).

Fields used (sentencepiece_model.proto): ModelProto.pieces = 1 (SentencePiece: piece = 1 string,
score = 2 float, type = 3 enum NORMAL 1 / UNKNOWN 2 / CONTROL 3 / USER_DEFINED 4 / UNUSED 5 / BYTE 6, which
are also llama.cpp's token type numbers); ModelProto.normalizer_spec = 3 (add_dummy_prefix = 3, default true).
"""

from __future__ import annotations

import struct
from pathlib import Path

from corral.store.errors import InvalidArgument


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _fields(buf: bytes):
    """Yields (field number, wire type, value) where value is an int, or bytes for length-delimited."""
    pos = 0
    value: int | bytes
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = int.from_bytes(buf[pos:pos + 8], "little"), pos + 8
        elif wire == 2:
            n, pos = _varint(buf, pos)
            value, pos = buf[pos:pos + n], pos + n
        elif wire == 5:
            value, pos = buf[pos:pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
        if pos > len(buf):
            raise ValueError("truncated field")
        yield field, wire, value


def read_spm(path: Path) -> tuple[list[tuple[str, float, int]], bool]:
    """([(piece, score, type), ...] in id order, add_dummy_prefix); InvalidArgument if unreadable."""
    try:
        buf = Path(path).read_bytes()
        pieces: list[tuple[str, float, int]] = []
        add_dummy_prefix = True
        for field, wire, value in _fields(buf):
            if field == 1 and wire == 2:
                piece, score, kind = "", 0.0, 1
                for f, w, v in _fields(value):
                    if f == 1 and w == 2:
                        piece = v.decode("utf-8")
                    elif f == 2 and w == 5:
                        (score,) = struct.unpack("<f", v)
                    elif f == 3 and w == 0:
                        kind = v
                pieces.append((piece, score, kind))
            elif field == 3 and wire == 2:
                for f, w, v in _fields(value):
                    if f == 3 and w == 0:
                        add_dummy_prefix = bool(v)
    except (ValueError, UnicodeDecodeError, struct.error) as exc:
        raise InvalidArgument(f"invalid tokenizer.model: {exc}") from None
    if not pieces:
        raise InvalidArgument("invalid tokenizer.model: no pieces")
    return pieces, add_dummy_prefix
