"""Byte-exact stand-ins for the Go encodings Ollama uses when it writes files and error texts.

Why: blobs are content-addressed, so a params, messages or config blob we write only gets the same digest
as Ollama's (and is shared, reported as "using existing layer", mounted on push) if its bytes are the same.
Ollama writes them with Go's `json.NewEncoder(w).Encode(v)`: compact, a trailing newline, `<`, `>` and `&`
escaped as \\u003c \\u003e \\u0026, U+2028/U+2029 escaped, and float64 numbers formatted by strconv
('f' notation between 1e-6 and 1e21, so 1.0 is `1` and 1e-05 is `0.00001`). Error texts quote names
with Go's %q, which go_quote reproduces for the characters names can contain.
"""

from __future__ import annotations

import json
import math
from decimal import Decimal
from typing import Any

_HTML_ESCAPES = (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"),
                 ("\u2029", "\\u2029"))


def _go_string(text: str) -> str:
    out = json.dumps(text, ensure_ascii=False)
    for raw, escaped in _HTML_ESCAPES:
        out = out.replace(raw, escaped)
    return out


def _go_float(value: float) -> str:
    if math.isnan(value) or math.isinf(value):
        raise ValueError(f"json: unsupported value: {value!r}")
    magnitude = abs(value)
    if magnitude != 0 and (magnitude < 1e-6 or magnitude >= 1e21):
        mantissa, exponent = repr(value).split("e")  # repr is the shortest round-trip form, as Go's -1
        sign, digits = exponent[0], exponent[1:].lstrip("0") or "0"
        if sign == "+" and len(digits) < 2:
            digits = digits.rjust(2, "0")  # strconv writes at least two exponent digits: 1e+21
        return f"{mantissa}e{sign}{digits}"  # ... and encoding/json trims e-07 to e-7
    text = format(Decimal(repr(value)), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text or "0"


def _encode(value: Any, sort_keys: bool) -> str:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _go_float(value)
    if isinstance(value, str):
        return _go_string(value)
    if isinstance(value, dict):
        items = sorted(value.items()) if sort_keys else value.items()
        return "{" + ",".join(f"{_go_string(str(k))}:{_encode(v, sort_keys)}" for k, v in items) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_encode(v, sort_keys) for v in value) + "]"
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


def go_json(value: Any, *, sort_keys: bool = False) -> bytes:
    """`json.NewEncoder(w).Encode(value)`: compact Go JSON plus '\\n'.

    Dicts keep their order (a Go struct) unless sort_keys (a Go map, whose keys Go sorts at every level).
    """
    return (_encode(value, sort_keys) + "\n").encode("utf-8")


_GO_SHORT_ESCAPES = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t",
                     "\v": "\\v", "\\": "\\\\", '"': '\\"'}


def go_quote(text: str) -> str:
    """Go's %q (strconv.Quote): double quotes, backslash escapes, printable Unicode kept as is."""
    out = []
    for ch in text:
        if ch in _GO_SHORT_ESCAPES:
            out.append(_GO_SHORT_ESCAPES[ch])
        elif ch.isprintable() or ch == " ":
            out.append(ch)
        elif ord(ch) < 0x80:
            out.append(f"\\x{ord(ch):02x}")
        elif ord(ch) <= 0xFFFF:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(f"\\U{ord(ch):08x}")
    return '"' + "".join(out) + '"'
