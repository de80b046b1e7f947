"""Byte-exact stand-ins for the Go encodings Ollama uses: JSON, number formatting, quoting, durations.

Why one module: Ollama is written in Go, and what it writes is compared byte for byte. Blobs are
content-addressed, so a params, messages or config blob only gets Ollama's digest (and is shared, reported
as "using existing layer", mounted on push) if it is encoded as Go's `json.NewEncoder(w).Encode(v)` does:
compact, a trailing newline, `<`, `>` and `&` escaped as \\u003c \\u003e \\u0026, U+2028/U+2029 escaped,
lone surrogates replaced by U+FFFD, float64 numbers formatted by strconv ('f' notation between 1e-6 and
1e21, so 1.0 is `1` and 1e-05 is `0.00001`). Prompts rendered by Go templates print numbers with fmt's
%v ('g', 1e+06), error texts quote names with %q, and keep_alive values are Go duration strings. The
store, the template engine, the service and the REST shim all use these one implementations.
"""

from __future__ import annotations

import base64
import decimal
import math
import re
from collections.abc import Mapping
from typing import Any

# -- quoting ----------------------------------------------------------------------------------------

_ESCAPES = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v",
            "\\": "\\\\"}


def go_quote(text: str, quote: str = '"') -> str:
    """strconv.Quote (Go's %q), or QuoteRune's form with quote="'": printable runes kept, others escaped
    as \\n, \\x00, \\u00a0, \\U0001f600; a lone surrogate (invalid UTF-8 in Go) becomes \\ufffd."""
    out = [quote]
    for ch in text:
        o = ord(ch)
        if ch == quote:
            out.append("\\" + ch)
        elif ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ch.isprintable():
            out.append(ch)
        elif o < 0x20 or o == 0x7F:
            out.append("\\x%02x" % o)
        elif 0xD800 <= o <= 0xDFFF:
            out.append("\\ufffd")
        elif o < 0x10000:
            out.append("\\u%04x" % o)
        else:
            out.append("\\U%08x" % o)
    out.append(quote)
    return "".join(out)


# -- float64 formatting -----------------------------------------------------------------------------

def _digits(f: float) -> tuple[str, int]:
    """Shortest round-trip decimal digits of abs(f) and the decimal point position (0.DIGITS x 10^dp)."""
    _, digits, exp = decimal.Decimal(repr(abs(f))).as_tuple()
    assert isinstance(exp, int)  # finite numbers only
    ds = "".join(map(str, digits)).lstrip("0")
    stripped = ds.rstrip("0")
    exp += len(ds) - len(stripped)
    return stripped, len(stripped) + exp


def _fmt_e(neg: bool, ds: str, dp: int) -> str:
    exp = dp - 1
    mant = ds[0] + ("." + ds[1:] if len(ds) > 1 else "")
    return ("-" if neg else "") + mant + "e" + ("-" if exp < 0 else "+") + "%02d" % abs(exp)


def _fmt_f(neg: bool, ds: str, dp: int) -> str:
    if dp <= 0:
        s = "0." + "0" * -dp + ds
    elif dp >= len(ds):
        s = ds + "0" * (dp - len(ds))
    else:
        s = ds[:dp] + "." + ds[dp:]
    return ("-" if neg else "") + s


def format_float_g(f: float) -> str:
    """fmt's %v / %g for float64 (strconv 'g', shortest): exponent form when exp < -4 or >= 6 (1e+06)."""
    if math.isnan(f):
        return "NaN"
    if math.isinf(f):
        return "+Inf" if f > 0 else "-Inf"
    neg = math.copysign(1.0, f) < 0
    if f == 0:
        return "-0" if neg else "0"
    ds, dp = _digits(f)
    if dp - 1 < -4 or dp - 1 >= 6:  # strconv 'g' with shortest digits uses precision 6 for this choice
        return _fmt_e(neg, ds, dp)
    return _fmt_f(neg, ds, dp)


def format_float_json(f: float) -> str | None:
    """encoding/json's float64 form; None for NaN/Inf (json.Marshal fails on them)."""
    if math.isnan(f) or math.isinf(f):
        return None
    neg = math.copysign(1.0, f) < 0
    if f == 0:
        return "-0" if neg else "0"
    ds, dp = _digits(f)
    if abs(f) < 1e-6 or abs(f) >= 1e21:
        s = _fmt_e(neg, ds, dp)
        if len(s) >= 4 and s[-4] == "e" and s[-3] == "-" and s[-2] == "0":
            s = s[:-2] + s[-1]  # encoding/json trims e-07 to e-7
        return s
    return _fmt_f(neg, ds, dp)


# -- JSON -------------------------------------------------------------------------------------------

class GoStruct(dict):
    """A dict standing for a Go struct: JSON keeps its key order, where a Go map sorts its keys."""


class UnsupportedValue(ValueError):
    """json.Marshal's error for a value it cannot encode (NaN, infinities)."""


_JSON_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b",
                 "\f": "\\f", "<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028",
                 "\u2029": "\\u2029"}


def _json_str(s: str) -> str:
    out = ['"']
    for ch in s:
        escaped = _JSON_ESCAPES.get(ch)
        if escaped is not None:
            out.append(escaped)
        elif ord(ch) < 0x20:
            out.append("\\u%04x" % ord(ch))
        elif 0xD800 <= ord(ch) <= 0xDFFF:
            out.append("\ufffd")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def go_marshal(v: Any, sort_maps: bool = True) -> str:
    """json.Marshal(v). Mappings are Go maps (keys sorted) when sort_maps, except GoStructs, which keep
    their order; with sort_maps=False every mapping keeps its order (all of them stand for structs)."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        s = format_float_json(v)
        if s is None:
            raise UnsupportedValue(f"json: unsupported value: {v!r}")
        return s
    if isinstance(v, str):
        return _json_str(v)
    if isinstance(v, Mapping):
        items = list(v.items())
        if sort_maps and not isinstance(v, GoStruct):
            items.sort(key=lambda kv: str(kv[0]))
        return "{" + ",".join(_json_str(str(k)) + ":" + go_marshal(x, sort_maps) for k, x in items) + "}"
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(go_marshal(x, sort_maps) for x in v) + "]"
    if isinstance(v, bytes):
        return '"' + base64.b64encode(v).decode() + '"'
    return _json_str(str(v))


def go_json(value: Any, *, sort_keys: bool = False) -> bytes:
    """`json.NewEncoder(w).Encode(value)`: compact Go JSON plus '\\n'.

    Dicts keep their order (a Go struct) unless sort_keys (a Go map, whose keys Go sorts at every level).
    """
    return (go_marshal(value, sort_maps=sort_keys) + "\n").encode("utf-8")


# -- durations --------------------------------------------------------------------------------------

_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_PIECE = re.compile(r"(\d+\.?\d*|\.\d+)([^\d.]*)")


def parse_go_duration(text: str) -> float:
    """Seconds of a Go duration string ("5m", "1h30m", "-1s", "0"): time.ParseDuration, whose error
    texts (ValueError) clients see in keep_alive errors."""
    quoted = '"' + text + '"'
    s = text
    sign = 1.0
    if s and s[0] in "+-":
        sign = -1.0 if s[0] == "-" else 1.0
        s = s[1:]
    if s == "0":
        return 0.0
    if not s:
        raise ValueError(f"time: invalid duration {quoted}")
    total, pos = 0.0, 0
    while pos < len(s):
        match = _PIECE.match(s, pos)
        if not match:
            raise ValueError(f"time: invalid duration {quoted}")
        number, unit = match.groups()
        if not unit:
            raise ValueError(f"time: missing unit in duration {quoted}")
        if unit not in _UNITS:
            raise ValueError(f'time: unknown unit "{unit}" in duration {quoted}')
        total += float(number) * _UNITS[unit]
        pos = match.end()
    return sign * total
