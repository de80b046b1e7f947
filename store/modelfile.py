"""Modelfile parsing and printing, PARAMETER typing and request-option checks, as Ollama does them.

Why: the legacy create request carries Modelfile text, `show` prints one, and clients (and people) compare
both with Ollama's byte for byte. So the parser is a transcription of Ollama's rune-by-rune state machine
(parser/parser.go), quirks included: CR and LF each count as a line, non-printable characters outside
quoted line breaks are dropped, a quoted value runs on until its closing quote ends a line. Printing
(format_show_modelfile, format_parameters) lives in store/modelfile_print.py and is re-exported here.
"""

from __future__ import annotations

import logging
import os
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from corral.store.digests import file_digest
from corral.store.errors import InvalidArgument
from corral.store.modelfile_print import format_parameters, format_show_modelfile, go_quote, quote  # noqa: F401
from corral.store.options import DEPRECATED, OPTIONS

log = logging.getLogger(__name__)

COMMANDS = ("from", "license", "template", "system", "adapter", "draft", "renderer", "parser", "parameter",
            "message", "requires")
ERR_COMMAND = ('command must be one of "from", "license", "template", "system", "adapter", "draft", '
               '"renderer", "parser", "parameter", "message", or "requires"')
ERR_ROLE = 'message role must be one of "system", "user", or "assistant"'
ERR_EOF = "unexpected EOF"
ERR_NO_FROM = "no FROM line"

PARAMETER_TYPES: dict[str, type] = {key: kind for key, (kind, _) in OPTIONS.items()}
DEPRECATED_PARAMETERS = DEPRECATED


@dataclass(frozen=True)
class Command:
    """One Modelfile instruction. name is the lower-case instruction ('from', 'parameter', ...);
    key is the parameter name for 'parameter' and the role for 'message', else ''."""

    name: str
    args: str
    key: str = ""


# --- parsing ---------------------------------------------------------------------------------------------

_NIL, _NAME, _VALUE, _PARAM, _MESSAGE, _COMMENT = range(6)


def _alpha(c: str) -> bool:
    return "a" <= c <= "z" or "A" <= c <= "Z"


def _unquote(s: str) -> tuple[str, bool]:
    if s.startswith('"""'):
        return (s[3:-3], True) if len(s) >= 6 and s.endswith('"""') else ("", False)
    if s.startswith('"'):
        return (s[1:-1], True) if len(s) >= 2 and s.endswith('"') else ("", False)
    return s, True


def _decode(data: bytes | str) -> str:
    """Like Go's unicode.BOMOverride(UTF8 decoder): a UTF-8/UTF-16 BOM picks the encoding and is dropped."""
    if isinstance(data, str):
        return data[1:] if data.startswith("\ufeff") else data
    if data.startswith(b"\xef\xbb\xbf"):
        return data[3:].decode("utf-8", errors="replace")
    if data.startswith(b"\xff\xfe"):
        return data[2:].decode("utf-16-le", errors="replace")
    if data.startswith(b"\xfe\xff"):
        return data[2:].decode("utf-16-be", errors="replace")
    return data.decode("utf-8", errors="replace")


def _err(line: int, msg: str) -> InvalidArgument:
    return InvalidArgument(f"(line {line}): {msg}")


def parse_modelfile(text: str | bytes) -> list[Command]:
    """Parses Modelfile text; raises InvalidArgument with Ollama's exact error texts."""
    commands: list[Command] = []
    state, line = _NIL, 1
    buf: list[str] = []
    name = key = ""
    for c in _decode(text):
        newline, space = c in "\r\n", c in " \t"
        if newline:
            line += 1
        # the next state for this rune (parseRuneForState); `keep` is whether the rune may be buffered
        keep = True
        if state == _NIL:
            nxt = _COMMENT if c == "#" else _NIL if (space or newline) else _NAME
            keep = nxt == _NAME
        elif state == _NAME:
            if _alpha(c):
                nxt = _NAME
            elif space:
                nxt, keep = _VALUE, False
            else:
                raise _err(line, ERR_COMMAND)
        elif state == _VALUE:
            nxt = _NIL if (newline or space) else _VALUE
        elif state in (_PARAM, _MESSAGE):
            if _alpha(c) or (state == _PARAM and ((c.isascii() and c.isdigit()) or c == "_")):
                nxt = state
            elif space:
                nxt, keep = _VALUE, False
            else:
                raise InvalidArgument(f"{ERR_EOF}: {''.join(buf)}")
        else:  # comment
            nxt, keep = (_NIL if newline else _COMMENT), False

        if nxt != state:
            word = "".join(buf)
            if state == _NAME:
                lower = word.lower()
                if lower not in COMMANDS:
                    raise _err(line, ERR_COMMAND)
                name = lower
                nxt = {"parameter": _PARAM, "message": _MESSAGE}.get(lower, nxt)
            elif state in (_PARAM, _MESSAGE):
                if state == _MESSAGE and word not in ("system", "user", "assistant"):
                    raise _err(line, ERR_ROLE)
                key = word
            elif state == _VALUE:
                value, ok = _unquote(word.strip(" \t\r\n\v\f"))
                if not ok or space:
                    buf.append(c)  # still inside quotes, or a space inside the value
                    continue
                commands.append(Command(name, value, key))
                key = ""
            buf = []
            state = nxt
        if keep and c.isprintable():
            buf.append(c)

    if state == _VALUE:
        value, ok = _unquote("".join(buf).strip(" \t\r\n\v\f"))
        if not ok:
            raise InvalidArgument(ERR_EOF)
        commands.append(Command(name, value, key))
    elif state not in (_NIL, _COMMENT):
        raise InvalidArgument(ERR_EOF)
    if not any(cmd.name == "from" for cmd in commands):
        raise InvalidArgument(ERR_NO_FROM)
    return commands


# --- PARAMETER values -----------------------------------------------------------------------------------

_INT_RE = re.compile(r"[+-]?[0-9]+")
_FLOAT_RE = re.compile(r"[+-]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|inf|infinity)|nan", re.I)
_HEX_FLOAT_RE = re.compile(r"[+-]?0x(?:[0-9a-f]+\.?[0-9a-f]*|\.[0-9a-f]+)p[+-]?[0-9]+", re.I)
_BOOLS = {"1": True, "t": True, "T": True, "TRUE": True, "true": True, "True": True,
          "0": False, "f": False, "F": False, "FALSE": False, "false": False, "False": False}


def float32_value(x: float) -> float:
    """x rounded to float32, as the Python float with the shortest float32 repr (0.7, not 0.699999988)."""
    if x != x or x in (float("inf"), float("-inf")):
        return x
    (f,) = struct.unpack("f", struct.pack("f", x))
    for digits in range(1, 10):
        short = float(f"{f:.{digits}g}")
        if struct.unpack("f", struct.pack("f", short))[0] == f:
            return short
    return f


def _parse_float32(v: str) -> float | None:
    """Go's strconv.ParseFloat(v, 32) then float32(): None where Go reports an error (syntax or overflow)."""
    if _FLOAT_RE.fullmatch(v):
        x = float(v)
    elif _HEX_FLOAT_RE.fullmatch(v):
        x = float.fromhex(v)
    else:
        return None
    try:
        f = float32_value(x)
    except OverflowError:
        return None
    if f in (float("inf"), float("-inf")) and x == x and x not in (float("inf"), float("-inf")):
        return None  # a finite value past float32's range: Go's ErrRange
    return f


def parse_parameter(key: str, value: str):
    """Converts one PARAMETER value to its option type (api.FormatParams); errors as Ollama words them."""
    kind = PARAMETER_TYPES.get(key)
    if kind is None:
        raise InvalidArgument(f"unknown parameter '{key}'")
    if kind is float:
        x = _parse_float32(value)
        if x is None:
            raise InvalidArgument(f"invalid float value [{value}]")
        return x
    if kind is int:
        if not _INT_RE.fullmatch(value) or not -(2**63) <= int(value) < 2**63:
            raise InvalidArgument(f"invalid int value [{value}]")
        return int(value)
    if kind is bool:
        if value not in _BOOLS:
            raise InvalidArgument(f"invalid bool value [{value}]")
        return _BOOLS[value]
    if kind is list:
        return [value]
    return value


def validate_options(options: dict | None) -> dict:
    """Checks request `options` like api.Options.FromMap: unknown keys are ignored (logged), None values
    skipped, JSON numbers accepted for integers (truncated) and floats. Returns the accepted options."""
    out: dict = {}
    for key, val in (options or {}).items():
        kind = PARAMETER_TYPES.get(key)
        if kind is None:
            log.warning("invalid option provided: %s", key)
            continue
        if val is None:
            continue
        number = isinstance(val, (int, float)) and not isinstance(val, bool)
        if kind is int:
            if not number or val != val or val in (float("inf"), float("-inf")):
                raise InvalidArgument(f'option "{key}" must be of type integer')
            out[key] = int(val)
        elif kind is float:
            if not number:
                raise InvalidArgument(f'option "{key}" must be of type float32')
            out[key] = float(val)
        elif kind is bool:
            if not isinstance(val, bool):
                raise InvalidArgument(f'option "{key}" must be of type boolean')
            out[key] = val
        elif kind is list:
            if not isinstance(val, list):
                raise InvalidArgument(f'option "{key}" must be of type array')
            if not all(isinstance(s, str) for s in val):
                raise InvalidArgument(f'option "{key}" must be of type array of strings')
            out[key] = list(val)
        else:
            if not isinstance(val, str):
                raise InvalidArgument(f'option "{key}" must be of type string')
            out[key] = val
    return out


# --- Modelfile -> create request ------------------------------------------------------------------------

_BLOB_RE = re.compile(r"@(sha256)[:-]([0-9a-fA-F]{64})")
_PRIMARY = ("model*.safetensors", "consolidated*.safetensors", "pytorch_model*.bin", "consolidated*.pth",
            "*.gguf", "*.bin")
_EXTRAS = ("*.json", "**/*.json", "tokenizer.model", "chat_template.jinja")


def _files_for_dir(root: Path) -> list[Path]:
    """The files a model directory contributes (spec §7): the first weight pattern that matches, plus extras."""
    picked: list[Path] = []
    for pattern in _PRIMARY:
        picked = sorted(p for p in root.glob(pattern) if p.is_file())
        if picked:
            break
    if not picked:
        raise InvalidArgument("no safetensors or torch files found")
    for pattern in _EXTRAS:
        picked += sorted(p for p in root.glob(pattern) if p.is_file() and p not in picked)
    for p in picked:
        if not p.resolve().is_relative_to(root.resolve()):
            raise InvalidArgument(f"insecure path: {p.relative_to(root)}")
    return picked


def _digest_map(arg: str, base_dir: Path | None, import_file, required: bool) -> dict[str, str] | None:
    """{name: digest} for '@sha256:<hex>' or an existing path; None if it names no file (→ a model name)."""
    m = _BLOB_RE.fullmatch(arg)
    if m:
        return {f"sha256-{m.group(2)}.gguf": f"sha256:{m.group(2)}"}
    path = Path(os.path.expanduser(arg)) if base_dir is not None else None
    if path is not None and base_dir is not None and not path.is_absolute():
        path = Path(base_dir) / path
    if path is None or not path.exists():
        if required:
            raise InvalidArgument(f"stat {path if path is not None else arg}: no such file or directory")
        return None
    if path.is_dir():
        return {p.relative_to(path).as_posix(): import_file(p) for p in _files_for_dir(path)}
    return {path.name: import_file(path)}


def modelfile_to_create(commands: list[Command], base_dir: Path | None = None,
                        import_file: Callable[[Path], str] | None = None) -> dict:
    """Maps parsed commands onto create-request fields, as Ollama's CLI does (spec §7).

    Paths are looked up only when base_dir (the Modelfile's folder) is given, so Modelfile text sent over
    the API cannot make the server read its own files. Each file found is passed to import_file (default:
    just hash it), which returns its digest; a store passes one that also writes the blob. Keys that are
    empty are left out, like Go's omitempty.
    """
    import_file = import_file or file_digest
    req: dict = {}
    params: dict = {}
    for cmd in commands:
        if cmd.name == "from":
            files = _digest_map(cmd.args, base_dir, import_file, required=False)
            if files is None:
                req["from"] = cmd.args
            else:
                req.setdefault("files", {}).update(files)
        elif cmd.name == "adapter":
            req["adapters"] = _digest_map(cmd.args, base_dir, import_file, required=True)
        elif cmd.name in ("template", "system", "renderer", "parser", "requires", "draft"):
            req[cmd.name] = cmd.args
        elif cmd.name == "license":
            req.setdefault("license", []).append(cmd.args)
        elif cmd.name == "message":
            req.setdefault("messages", []).append({"role": cmd.key, "content": cmd.args})
        elif cmd.name == "parameter":
            if cmd.key in DEPRECATED_PARAMETERS:
                log.warning("parameter %s is deprecated", cmd.key)
                continue
            value = parse_parameter(cmd.key, cmd.args)
            if isinstance(value, list):
                params.setdefault(cmd.key, []).extend(value)
            else:
                params[cmd.key] = value
    if "from" not in req and "files" not in req:
        raise InvalidArgument(ERR_NO_FROM)
    if params:
        req["parameters"] = params
    return req
