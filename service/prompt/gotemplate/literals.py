"""Decoding of Go literals in templates: strconv.Unquote for "..", `..` and '..', and number syntax.

Kept apart from the parser because the rules are Go's, not the template grammar's: escapes like
\\x41 and \\u00e9, raw strings that drop \\r, 017 being octal, 1_000 and 0x1p-2 being numbers, and
'a' being the integer 97.
"""

from __future__ import annotations

import re

from corral.store.gocompat import go_quote

_SIMPLE_ESC = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", "\\": "\\"}


def unquote(tok: str) -> str:
    """strconv.Unquote for "..." , `...` and '...' literals; raises ValueError("invalid syntax")."""
    q = tok[:1]
    if len(tok) < 2 or tok[-1] != q:
        raise ValueError("invalid syntax")
    body = tok[1:-1]
    if q == "`":
        if "`" in body:
            raise ValueError("invalid syntax")
        return body.replace("\r", "")
    out, i = [], 0
    while i < len(body):
        c = body[i]
        if c == q or c == "\n":
            raise ValueError("invalid syntax")
        if c != "\\":
            out.append(c)
            i += 1
            continue
        e = body[i + 1 : i + 2]
        i += 2
        if e in _SIMPLE_ESC:
            out.append(_SIMPLE_ESC[e])
        elif e == q:
            out.append(q)
        elif e in ("x", "u", "U"):
            n = {"x": 2, "u": 4, "U": 8}[e]
            h = body[i : i + n]
            if len(h) != n or not re.fullmatch(r"[0-9a-fA-F]+", h):
                raise ValueError("invalid syntax")
            code = int(h, 16)
            if e != "x" and (code > 0x10FFFF or 0xD800 <= code <= 0xDFFF):
                raise ValueError("invalid syntax")
            out.append(chr(code))
            i += n
        elif e in "01234567" and e:
            o = body[i - 1 : i + 2]
            if not re.fullmatch(r"[0-7]{3}", o) or int(o, 8) > 255:
                raise ValueError("invalid syntax")
            out.append(chr(int(o, 8)))
            i += 2
        else:
            raise ValueError("invalid syntax")
    s = "".join(out)
    if q == "'" and len(s) != 1:
        raise ValueError("invalid syntax")
    return s


def parse_number(text: str) -> int | float:
    """Go number literal -> int or float (idealConstant rules); raises ValueError with Go's text."""
    if text.startswith("'"):
        try:
            return ord(unquote(text))
        except ValueError:
            raise ValueError(f"malformed character constant: {text}") from None
    t = text.replace("_", "") if "_" in text.strip("_") else text
    body = t.lstrip("+-")
    sign = -1 if t.startswith("-") else 1
    try:
        if re.fullmatch(r"0[xX][0-9a-fA-F]+|0[oO][0-7]+|0[bB][01]+|[0-9]+", body):
            if re.fullmatch(r"0[0-7]+", body):
                return sign * int(body, 8)
            return sign * int(body, 0)
        if re.fullmatch(r"0[xX][0-9a-fA-F]*\.?[0-9a-fA-F]*[pP][+-]?[0-9]+", body):
            return sign * float.fromhex(body)
        if re.fullmatch(r"([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?", body):
            return sign * float(body)
    except ValueError:
        pass
    raise ValueError(f"illegal number syntax: {go_quote(text)}")
