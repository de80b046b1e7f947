"""How Python values look and behave inside a Go template: truth, printing, quoting and JSON.

Go prints values with fmt's %v and encodes them with encoding/json; prompts are only
byte-identical to Ollama's if we do the same: floats as %g with the shortest digits (1e+06,
1.5), bools as true/false, strings quoted with strconv.Quote rules, JSON compact with <, > and &
escaped as \\u003c... and map keys sorted. A Go struct keeps its field order in JSON while a Go
map sorts its keys; `Struct` is a dict whose insertion order is kept, plain dicts are maps.
"""

from __future__ import annotations

import decimal
import math
from collections.abc import Mapping


class Struct(dict):
    """A dict standing for a Go struct: JSON keeps its key order (plain dicts are sorted like maps)
    and %v prints the values in order, {a b}."""


class JSONStringer:
    """Mixin for values whose Go type has a String() method returning its JSON (Ollama's tool
    types): printing them gives JSON instead of fmt's map[...] / {...} / [...] forms."""


class JSONMap(JSONStringer, dict):
    """A Go map that prints as JSON (Ollama's templateArgs, templateProperties)."""


class JSONStruct(JSONStringer, Struct):
    """A Go struct that prints as JSON (Ollama's templateTool)."""


class JSONList(JSONStringer, list):
    """A Go slice that prints as JSON (Ollama's templateTools)."""


def truth(v) -> bool:
    """Go template truth: false, 0, nil, and empty strings, lists and maps are false."""
    if v is None:
        return False
    if isinstance(v, (bool, int, float, complex)):
        return v != 0
    if isinstance(v, (str, bytes, list, tuple, Mapping, set, frozenset)):
        return len(v) > 0
    return True


def kind(v) -> str:
    if v is None:
        return "nil"
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "int"
    if isinstance(v, float):
        return "float"
    if isinstance(v, complex):
        return "complex"
    if isinstance(v, str):
        return "string"
    return "other"


def type_name(v) -> str:
    """Go type name for fmt's %!verb(type=value) messages."""
    if isinstance(v, Mapping):
        return "map[string]interface {}"
    if isinstance(v, (list, tuple)):
        return "[]interface {}"
    return {"nil": "<nil>", "bool": "bool", "int": "int", "float": "float64", "complex": "complex128",
            "string": "string"}.get(kind(v), type(v).__name__)


# -- quoting ------------------------------------------------------------------
_ESC = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v",
        "\\": "\\\\"}


def go_quote(s: str, quote: str = '"') -> str:
    """strconv.Quote: printable runes kept, others escaped as \\n, \\x00, \\u00a0, \\U0001f600."""
    out = [quote]
    for ch in s:
        o = ord(ch)
        if ch == quote:
            out.append("\\" + ch)
        elif ch in _ESC:
            out.append(_ESC[ch])
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


# -- floats -------------------------------------------------------------------
def _digits(f: float) -> tuple[str, int]:
    """Shortest round-trip decimal digits of abs(f) and the decimal point position (0.DIGITS x 10^dp)."""
    _, digits, exp = decimal.Decimal(repr(abs(f))).as_tuple()
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


def _special(f: float) -> str | None:
    if math.isnan(f):
        return "NaN"
    if math.isinf(f):
        return "+Inf" if f > 0 else "-Inf"
    return None


def format_float_g(f: float) -> str:
    """fmt's %v / %g for float64: shortest digits, exponent form when exp < -4 or exp >= 6 (1e+06)."""
    sp = _special(f)
    if sp is not None:
        return sp
    neg = math.copysign(1.0, f) < 0
    if f == 0:
        return "-0" if neg else "0"
    ds, dp = _digits(f)
    exp = dp - 1
    if exp < -4 or exp >= 6:  # strconv 'g' with shortest digits uses precision 6 for this choice
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
            s = s[:-2] + s[-1]
        return s
    return _fmt_f(neg, ds, dp)


# -- printing -----------------------------------------------------------------
def go_str(v, nil: str = "<nil>") -> str:
    """fmt's %v: map[a:1 b:2] (sorted keys), [x y], {field values}; JSONStringer values as JSON."""
    if isinstance(v, JSONStringer):
        return go_json(v)
    if v is None:
        return nil
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return format_float_g(v)
    if isinstance(v, str):
        return v
    if isinstance(v, complex):
        return "(%s%s%si)" % (format_float_g(v.real), "" if v.imag < 0 else "+", format_float_g(v.imag))
    if isinstance(v, Struct):
        return "{" + " ".join(go_str(x) for x in v.values()) + "}"
    if isinstance(v, Mapping):
        return "map[" + " ".join(f"{go_str(k)}:{go_str(v[k])}" for k in sorted(v, key=sort_key)) + "]"
    if isinstance(v, (list, tuple)):
        return "[" + " ".join(go_str(x) for x in v) + "]"
    if isinstance(v, bytes):
        return "[" + " ".join(str(b) for b in v) + "]"
    return str(v)


def sort_key(k):
    """Go's fmtsort order for map keys: numbers numerically, strings lexically."""
    if isinstance(k, (int, float)) and not isinstance(k, bool):
        return (0, k, "")
    return (1, 0, str(k))


# -- JSON ---------------------------------------------------------------------
_JSON_ESC = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b", "\f": "\\f",
             "<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def _json_str(s: str) -> str:
    out = ['"']
    for ch in s:
        e = _JSON_ESC.get(ch)
        if e is not None:
            out.append(e)
        elif ord(ch) < 0x20:
            out.append("\\u%04x" % ord(ch))
        elif 0xD800 <= ord(ch) <= 0xDFFF:
            out.append("\ufffd")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


class _Unsupported(Exception):
    pass


def _json(v) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        s = format_float_json(v)
        if s is None:
            raise _Unsupported
        return s
    if isinstance(v, str):
        return _json_str(v)
    if isinstance(v, Mapping):
        items = list(v.items()) if isinstance(v, Struct) else sorted(v.items(), key=lambda kv: str(kv[0]))
        return "{" + ",".join(_json_str(str(k)) + ":" + _json(x) for k, x in items) + "}"
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(_json(x) for x in v) + "]"
    if isinstance(v, bytes):
        import base64

        return '"' + base64.b64encode(v).decode() + '"'
    return _json_str(str(v))


def go_json(v) -> str:
    """json.Marshal(v) as Ollama's `json` template function returns it ("" when Marshal fails)."""
    try:
        return _json(v)
    except _Unsupported:
        return ""
