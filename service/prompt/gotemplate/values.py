"""How Python values look and behave inside a Go template: truth, printing, quoting and JSON.

Go prints values with fmt's %v and encodes them with encoding/json; prompts are only
byte-identical to Ollama's if we do the same: floats as %g with the shortest digits (1e+06,
1.5), bools as true/false, strings quoted with strconv.Quote rules, JSON compact with <, > and &
escaped as \\u003c... and map keys sorted. A Go struct keeps its field order in JSON while a Go
map sorts its keys; `Struct` is a dict whose insertion order is kept, plain dicts are maps.
"""

from __future__ import annotations

from collections.abc import Mapping

from corral.store.gocompat import GoStruct as Struct
from corral.store.gocompat import UnsupportedValue, format_float_g, go_marshal


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
def go_json(v) -> str:
    """json.Marshal(v) as Ollama's `json` template function returns it ("" when Marshal fails)."""
    try:
        return go_marshal(v)
    except UnsupportedValue:
        return ""
