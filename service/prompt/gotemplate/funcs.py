"""Template functions: Go's builtins (eq, and, len, slice, printf, ...) plus Ollama's own
(json, currentDate, yesterdayDate, toTypeScriptType).

Each entry is (function, min args, max args or None). A function raises FuncError and the
executor reports it as Go does: "error calling <name>: <message>". `and` and `or` are listed for
arity only: the executor evaluates their operands lazily (Go 1.18+ short-circuit semantics) and
returns the deciding operand itself, not a bool.
"""

from __future__ import annotations

import datetime
import html as _html
import urllib.parse
from collections.abc import Mapping

from .printf import sprint, sprintf, sprintln
from .values import go_json, go_str, kind, type_name


class FuncError(Exception):
    pass


# -- comparisons --------------------------------------------------------------
def _basic(v) -> str:
    k = kind(v)
    return "number" if k in ("int", "float") else k


def eq(a, *others):
    if not others:
        raise FuncError("missing argument for comparison")
    ka = _basic(a)
    for b in others:
        kb = _basic(b)
        if ka != kb:
            if a is not None and b is not None:
                raise FuncError("incompatible types for comparison")
            continue
        if ka == "other" and not (_comparable(a) and _comparable(b)):
            raise FuncError(f"non-comparable type {go_str(a)}: {type_name(a)}")
        if a == b:
            return True
    return False


def _comparable(v) -> bool:
    return not isinstance(v, (list, tuple, Mapping, set))


def ne(a, b):
    return not eq(a, b)


def lt(a, b):
    ka, kb = _basic(a), _basic(b)
    if ka in ("nil", "other") or kb in ("nil", "other"):
        raise FuncError("invalid type for comparison")
    if ka != kb:
        raise FuncError("incompatible types for comparison")
    if ka in ("bool", "complex"):
        raise FuncError("invalid type for comparison")
    return a < b


def le(a, b):
    return lt(a, b) or eq(a, b)


def gt(a, b):
    return not le(a, b)


def ge(a, b):
    return not lt(a, b)


def not_(v):
    from .values import truth

    return not truth(v)


# -- containers ---------------------------------------------------------------
def _as_index(x, nil: str = "nil") -> int:
    if x is None:  # Go's wording differs: index says "with nil", slice "with type interface {}"
        raise FuncError(f"cannot index slice/array with {nil}")
    if kind(x) != "int":
        raise FuncError(f"cannot index slice/array with type {type_name(x)}")
    return x


def len_(v):
    if v is None:
        return 0
    if isinstance(v, str):
        return len(v.encode("utf-8", "surrogatepass"))  # Go counts bytes
    if isinstance(v, (list, tuple, Mapping, bytes, set)):
        return len(v)
    raise FuncError(f"len of type {type_name(v)}")


def index(item, *indexes):
    v = item
    for ix in indexes:
        if v is None:
            return None
        if isinstance(v, Mapping):
            v = v.get(ix)
        elif isinstance(v, (list, tuple, str, bytes)):
            i = _as_index(ix)
            seq = v.encode("utf-8", "surrogatepass") if isinstance(v, str) else v
            if not 0 <= i < len(seq):
                raise FuncError(f"index out of range: {i}")
            v = seq[i]
        else:
            raise FuncError(f"can't index item of type {type_name(v)}")
    return v


def slice_(item, *indexes):
    if len(indexes) > 3:
        raise FuncError(f"too many slice indexes: {len(indexes)}")
    if item is None:
        raise FuncError("slice of untyped nil")
    is_str = isinstance(item, str)
    if not isinstance(item, (list, tuple, str)):
        raise FuncError(f"can't slice item of type {type_name(item)}")
    if is_str and len(indexes) == 3:
        raise FuncError("cannot 3-index slice a string")
    seq = item.encode("utf-8", "surrogatepass") if is_str else item
    idx = [0, len(seq)]
    for i, x in enumerate(indexes):
        n = _as_index(x, nil="type interface {}")
        if not 0 <= n <= len(seq):
            raise FuncError(f"index out of range: {n}")
        if i < 2:
            idx[i] = n
    if idx[0] > idx[1]:
        raise FuncError(f"invalid slice index: {idx[0]} > {idx[1]}")
    if len(indexes) == 3 and idx[1] > indexes[2]:
        raise FuncError(f"invalid slice index: {idx[1]} > {indexes[2]}")
    out = seq[idx[0] : idx[1]]
    return out.decode("utf-8", "replace") if is_str else list(out)


# -- escaping -----------------------------------------------------------------
def _text(args) -> str:
    """Go's evalArgs for html/js/urlquery: one string as is, else Sprint with nil as "<no value>"."""
    if len(args) == 1 and isinstance(args[0], str):
        return args[0]
    return sprint(["<no value>" if a is None else a for a in args])


def html_(*args):
    s = _text(args).replace("\0", "\ufffd")
    return _html.escape(s, quote=False).replace('"', "&#34;").replace("'", "&#39;")


def js_(*args):
    out = []
    for ch in _text(args):
        if ch in "\\'\"":
            out.append("\\" + ch)
        elif ch in "<>&=" or ord(ch) < 0x20 or (not ch.isprintable() and ord(ch) >= 0x80):
            out.append("\\u%04X" % ord(ch))
        else:
            out.append(ch)
    return "".join(out)


def urlquery(*args):
    return urllib.parse.quote_plus(_text(args), safe="")


def printf_(fmt, *args):
    if not isinstance(fmt, str):  # only reachable through a pipeline: literals are checked earlier
        raise FuncError(f"wrong type for value; expected string; got {type_name(fmt)}")
    return sprintf(fmt, args)


def call(fn, *args):
    raise FuncError(f"non-function {fn} of type {type_name(fn)}")


# -- Ollama's functions -------------------------------------------------------
def current_date(*args):
    """Today as YYYY-MM-DD; a format argument is accepted and ignored, as in Ollama."""
    return datetime.date.today().isoformat()


def yesterday_date(*args):
    return (datetime.date.today() - datetime.timedelta(days=1)).isoformat()


_TS_TYPES = {"string": "string", "number": "number", "integer": "number", "boolean": "boolean",
             "array": "any[]", "object": "Record<string, any>", "null": "null"}


def to_typescript_type(prop):
    """api.ToolProperty.ToTypeScriptType for a JSON-schema property dict; "any" otherwise."""
    if not isinstance(prop, Mapping):
        return "any"
    any_of = prop.get("anyOf") or prop.get("AnyOf")
    if any_of:
        return " | ".join(to_typescript_type(p) for p in any_of)
    t = prop.get("type", prop.get("Type"))
    types = [t] if isinstance(t, str) else list(t or [])
    if not types:
        return "any"
    return " | ".join(_TS_TYPES.get(x, "any") for x in types)


BUILTINS: dict[str, tuple] = {
    "and": (None, 1, None),
    "or": (None, 1, None),
    "not": (not_, 1, 1),
    "eq": (eq, 1, None),
    "ne": (ne, 2, 2),
    "lt": (lt, 2, 2),
    "le": (le, 2, 2),
    "gt": (gt, 2, 2),
    "ge": (ge, 2, 2),
    "len": (len_, 1, 1),
    "index": (index, 1, None),
    "slice": (slice_, 1, None),
    "print": (lambda *a: sprint(a), 0, None),
    "println": (lambda *a: sprintln(a), 0, None),
    "printf": (printf_, 1, None),
    "html": (html_, 0, None),
    "js": (js_, 0, None),
    "urlquery": (urlquery, 0, None),
    "call": (call, 1, None),
    "json": (go_json, 1, 1),
    "currentDate": (current_date, 0, None),
    "yesterdayDate": (yesterday_date, 0, None),
    "toTypeScriptType": (to_typescript_type, 1, 1),
}
