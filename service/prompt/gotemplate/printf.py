"""Go's fmt.Sprint, Sprintln and Sprintf for template values.

Templates build prompts with `printf "%s\\n\\n%s" $system .Content` and `print`; Go's spacing rule
for Sprint (a space only between two non-strings) and its in-band error forms (%!d(string=x),
%!s(MISSING), %!(EXTRA int=1)) are reproduced so prompts match Ollama's byte for byte.
Supported verbs: v s d f F e E g G t q x X o b c U and %%, with flags -+# 0, width and precision
(including *).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from corral.store.gocompat import format_float_g, go_quote

from .values import go_str, kind, type_name

_VERB = re.compile(r"%([-+# 0]*)(\*|\d+)?(?:\.(\*|\d*))?(.)?", re.S)


def sprint(args) -> str:
    """fmt.Sprint: operands joined with a space only where neither side is a string."""
    out, prev_str = [], False
    for i, a in enumerate(args):
        is_str = isinstance(a, str)
        if i > 0 and not is_str and not prev_str:
            out.append(" ")
        out.append(go_str(a))
        prev_str = is_str
    return "".join(out)


def sprintln(args) -> str:
    return " ".join(go_str(a) for a in args) + "\n"


def _bad(verb: str, arg) -> str:
    if arg is None:
        return f"%!{verb}(<nil>)"
    return f"%!{verb}({type_name(arg)}={go_str(arg)})"


def _pad(s: str, width: int | None, flags: str, numeric: bool = False) -> str:
    if width is None or len(s) >= width:
        return s
    if "-" in flags:
        return s + " " * (width - len(s))
    if "0" in flags and numeric:
        sign = s[0] if s[:1] in "+- " and s[:1] else ""
        body = s[len(sign):]
        return sign + "0" * (width - len(s)) + body
    return " " * (width - len(s)) + s


def _sign(s: str, flags: str) -> str:
    if not s.startswith("-"):
        if "+" in flags:
            return "+" + s
        if " " in flags:
            return " " + s
    return s


def _int(arg, verb: str, flags: str, prec: int | None) -> str | None:
    n = arg
    if verb == "c":
        return chr(n) if 0 <= n <= 0x10FFFF else "\ufffd"
    if verb == "q":
        return go_quote(chr(n) if 0 <= n <= 0x10FFFF else "\ufffd", "'")
    if verb == "U":
        return "U+%04X" % n
    base = {"d": "d", "v": "d", "x": "x", "X": "X", "o": "o", "b": "b"}.get(verb)
    if base is None:
        return None
    digits = format(abs(n), base)
    if prec is not None and len(digits) < prec:
        digits = "0" * (prec - len(digits)) + digits
    if "#" in flags and verb in "xXob":
        digits = {"x": "0x", "X": "0X", "o": "0", "b": "0b"}[verb] + digits
    return _sign(("-" if n < 0 else "") + digits, flags)


def _float(f: float, verb: str, flags: str, prec: int | None) -> str | None:
    if verb in "vgG" and prec is None:
        s = format_float_g(f)
        s = s.upper() if verb == "G" else s
    elif verb in "fFeEgGv":
        v = "g" if verb == "v" else verb
        s = ("%." + str(6 if prec is None else prec) + v) % f
        s = s.replace("inf", "Inf").replace("INF", "Inf").replace("nan", "NaN").replace("NAN", "NaN")
        if s == "Inf":
            s = "+Inf"
    else:
        return None
    return s if s.startswith(("-", "+")) else _sign(s, flags)


def _one(arg, verb: str, flags: str, width: int | None, prec: int | None) -> str:
    k = kind(arg)
    numeric = k in ("int", "float")
    s: str | None
    if verb == "T":
        s = type_name(arg)
    elif k == "bool":
        s = ("true" if arg else "false") if verb in "vt" else None
    elif k == "int":
        s = _int(arg, verb, flags, prec)
    elif k == "float":
        s = _float(arg, verb, flags, prec)
    elif k == "string":
        if verb in "vs":
            s = arg if prec is None else arg[:prec]
        elif verb == "q":
            s = go_quote(arg if prec is None else arg[:prec])
            if "#" in flags and "`" not in arg and all(c.isprintable() or c == "\t" for c in arg):
                s = "`" + arg + "`"
        elif verb in "xX":
            s = arg.encode("utf-8", "surrogatepass").hex()
            s = s.upper() if verb == "X" else s
        else:
            s = None
    elif k == "nil":
        s = "<nil>" if verb == "v" else None
    elif isinstance(arg, (list, tuple)) and verb in "sdqxXvfeEgG" and not any(
            isinstance(x, Mapping) for x in arg):
        s = "[" + " ".join(_one(x, verb, flags, None, prec) for x in arg) + "]"
    else:
        s = go_str(arg) if verb in "vs" else None
    if s is None:
        return _bad(verb, arg)
    return _pad(s, width, flags, numeric)


def sprintf(fmt: str, args) -> str:
    """fmt.Sprintf with Go's in-band errors for bad verbs and missing or extra operands."""
    out, i, ai = [], 0, 0
    while i < len(fmt):
        j = fmt.find("%", i)
        if j < 0:
            out.append(fmt[i:])
            break
        out.append(fmt[i:j])
        m = _VERB.match(fmt, j)
        assert m is not None  # every part of the pattern is optional: it always matches
        flags, width_s, prec_s, verb = m.groups()
        i = m.end()
        if verb is None:
            out.append("%!(NOVERB)")
            break
        if verb == "%":
            out.append("%")
            continue
        width = prec = None
        if width_s == "*":
            if ai < len(args) and kind(args[ai]) == "int":
                width = args[ai]
                if width < 0:
                    flags, width = flags + "-", -width
            else:
                out.append("%!(BADWIDTH)")
            ai += 1
        elif width_s:
            width = int(width_s)
        if prec_s == "*":
            if ai < len(args) and kind(args[ai]) == "int":
                prec = max(args[ai], 0)
            else:
                out.append("%!(BADPREC)")
            ai += 1
        elif prec_s is not None:
            prec = int(prec_s) if prec_s else 0
        if ai >= len(args):
            out.append(f"%!{verb}(MISSING)")
            continue
        out.append(_one(args[ai], verb, flags, width, prec))
        ai += 1
    if ai < len(args):
        extra = ", ".join("<nil>" if a is None else f"{type_name(a)}={go_str(a)}" for a in args[ai:])
        out.append(f"%!(EXTRA {extra})")
    return "".join(out)
