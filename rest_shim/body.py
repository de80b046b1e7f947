"""Reading Ollama JSON request bodies the way Ollama's Go decoder does.

Bodies are JSON whatever the Content-Type (curl -d sends form-encoded), and wrong field types answer with
Go's decoder texts, because clients and users compare against what Ollama says.
"""

import json
import math
import sys
from typing import Any

from flask import request
from google.protobuf import duration_pb2, struct_pb2
from google.protobuf.json_format import ParseDict
from werkzeug.exceptions import ClientDisconnected

from corral.rest_shim import reading
from corral.rest_shim.errors import HTTPError
from corral.rest_shim.jsonenc import loads
from corral.store import config
from corral.store.gocompat import parse_go_duration

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


# JSON kind names as Go's encoding/json prints them in "cannot unmarshal <kind>".
def _kind(value) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "null"


def json_body(request_type: str, required: bool = True) -> dict:
    """The request's JSON object; 400 with Ollama's texts for an empty or malformed body.

    Limits, whatever the route (malformed input is refused as a class, never reaches the service as a
    500): a body past CORRAL_MAX_BODY_BYTES is refused with 413 from its Content-Length before it is read
    (a chunked one when the limit is reached); nesting past CORRAL_MAX_JSON_DEPTH, NaN, infinities and
    numbers past float64's range are 400; lone UTF-16 surrogates become U+FFFD, as Go's decoder does.
    A body that cannot be read (malformed chunks, an early end, a client too slow) is answered with what
    its reader recorded (rest_shim/reading.py): 400, 413 or 408, never a 500."""
    limit = config.max_body_bytes()
    if request.content_length is not None and request.content_length > limit:
        raise _too_large(limit)
    try:
        if request.content_length is not None:
            raw = request.get_data(cache=True)
        else:
            reading.limit_chunked(request.stream, limit)
            raw = _read_chunked(limit)
    except HTTPError:
        raise
    except (OSError, ValueError, ClientDisconnected) as exc:
        status, text = reading.body_failure(request.stream) or (400, f"error reading the request body: {exc}")
        raise HTTPError(status, text) from None
    if not raw.strip():
        if required:
            raise HTTPError(400, "missing request body")
        return {}
    try:
        body = loads(raw)
    except UnicodeDecodeError:
        raise HTTPError(400, "invalid character looking for beginning of value") from None
    except json.JSONDecodeError as exc:
        raise HTTPError(400, _go_syntax_error(raw, exc)) from None
    except RecursionError:
        raise HTTPError(400, _too_deep()) from None
    except ValueError:  # an integer literal past Python's digit limit
        raise HTTPError(400, "json: cannot unmarshal number into Go value of type float64") from None
    if not isinstance(body, dict):
        raise HTTPError(400, f"json: cannot unmarshal {_kind(body)} into Go value of type api.{request_type}")
    body = _checked(body, config.max_json_depth())
    body["__type__"] = request_type
    return body


def _read_chunked(limit: int) -> bytes:
    """A body without Content-Length (chunked), read until its end or until it passes the limit (413)."""
    stream, size = request.stream, 0
    parts: list[bytes] = []
    while True:
        part = stream.read(min(1 << 16, limit + 1 - size))
        if not part:
            return b"".join(parts)
        parts.append(part)
        size += len(part)
        if size > limit:
            raise _too_large(limit)


def _too_large(limit: int) -> HTTPError:
    return HTTPError(413, f"http: request body too large (the limit is {limit} bytes)")


def _too_deep() -> str:
    return f"json: exceeded max depth of {config.max_json_depth()}"


_FLOAT64_MAX = sys.float_info.max


def _checked(body: dict, max_depth: int) -> dict:
    """The decoded body, walked without recursion: depth limited, numbers finite and within float64 (what
    Go's decoder accepts), lone surrogates (which json.loads lets through and protobuf refuses) replaced."""
    stack: list[tuple[Any, int]] = [(body, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > max_depth:
            raise HTTPError(400, _too_deep())
        items = node.items() if isinstance(node, dict) else enumerate(node)
        fixes: list[tuple[Any, str | None]] = []
        for key, value in items:
            if isinstance(value, str):
                if not value.isascii() and _has_surrogate(value):
                    fixes.append((key, _no_surrogates(value)))
            elif isinstance(value, (dict, list)):
                stack.append((value, depth + 1))
            elif isinstance(value, float):
                if not math.isfinite(value):
                    raise HTTPError(400, "json: cannot unmarshal number into Go value of type float64")
            elif isinstance(value, int) and not isinstance(value, bool) and abs(value) > _FLOAT64_MAX:
                raise HTTPError(400, f"json: cannot unmarshal number {str(value)[:32]}... into Go value of type "
                                     "float64")
            if isinstance(key, str) and not key.isascii() and _has_surrogate(key):
                fixes.append((key, None))
        for key, value in fixes:
            if value is None:  # a key with a surrogate: re-inserted under its replaced form
                node[_no_surrogates(key)] = node.pop(key)
            else:
                node[key] = value
    return body


def _has_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _no_surrogates(text: str) -> str:
    return "".join("\ufffd" if 0xD800 <= ord(c) <= 0xDFFF else c for c in text)


def _go_syntax_error(raw: bytes, exc: json.JSONDecodeError) -> str:
    if exc.pos >= len(exc.doc.rstrip()):
        return "unexpected EOF"
    char = exc.doc[exc.pos]
    return f"invalid character {char!r} looking for beginning of value"


def _type_error(body: dict, key: str, value, go_type: str) -> HTTPError:
    return HTTPError(
        400,
        f"json: cannot unmarshal {_kind(value)} into Go struct field {body.get('__type__', 'Request')}.{key} "
        f"of type {go_type}",
    )


def get_str(body: dict, key: str, default: str = "") -> str:
    value = body.get(key)
    if value is None:
        return default
    if not isinstance(value, str):
        raise _type_error(body, key, value, "string")
    return value


def get_bool(body: dict, key: str, default: bool | None = None) -> bool | None:
    value = body.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise _type_error(body, key, value, "bool")
    return value


def get_int(body: dict, key: str, default: int = 0) -> int:
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
        raise _type_error(body, key, value, "int")
    if not INT32_MIN <= value <= INT32_MAX:  # the proto fields are int32
        raise HTTPError(400, f"json: cannot unmarshal number {value} into Go struct field "
                             f"{body.get('__type__', 'Request')}.{key} of type int32")
    return int(value)


def get_int32_list(body: dict, key: str) -> list[int]:
    """A list of int32 (token ids); anything else is Go's type error."""
    values = get_list(body, key)
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int) or not INT32_MIN <= value <= INT32_MAX:
            raise _type_error(body, key, value, "int")
    return values


def get_dict(body: dict, key: str) -> dict | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _type_error(body, key, value, "map[string]interface {}")
    return value


def get_str_map(body: dict, key: str) -> dict[str, str]:
    value = get_dict(body, key) or {}
    for v in value.values():
        if not isinstance(v, str):
            raise _type_error(body, key, v, "string")
    return value


def get_str_list(body: dict, key: str) -> list[str]:
    """A string or a list of strings (license, input), as a list."""
    value = body.get(key)
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _type_error(body, key, value, "[]string")
    return value


def get_list(body: dict, key: str) -> list:
    value = body.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise _type_error(body, key, value, "[]interface {}")
    return value


def model_name(body: dict) -> str:
    """`model` if non-empty, else the `name` alias (show, delete, pull, push, create)."""
    return get_str(body, "model") or get_str(body, "name")


def stream_flag(body: dict) -> bool:
    return bool(get_bool(body, "stream", True))


def to_struct(data: dict | None) -> struct_pb2.Struct | None:
    if data is None:
        return None
    struct = struct_pb2.Struct()
    ParseDict(data, struct)
    return struct


def options(body: dict) -> struct_pb2.Struct | None:
    return to_struct(get_dict(body, "options"))


# -- keep_alive: a number of seconds or a Go duration string -------------------------------------------

_GO_TYPES = {bool: "bool", list: "[]interface {}", dict: "map[string]interface {}"}


def keep_alive(body: dict) -> duration_pb2.Duration | None:
    """The request's keep_alive as a Duration (negative = forever), or None for the server default."""
    value = body.get("keep_alive")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise HTTPError(400, f"Unsupported type: '{_GO_TYPES.get(type(value), type(value).__name__)}'")
    if isinstance(value, str):
        try:
            seconds = parse_go_duration(value)
        except ValueError as exc:
            raise HTTPError(400, str(exc)) from None
    else:
        seconds = float(value)
    # Negative means forever; anything past Duration's range is forever too, in practice.
    seconds = -1.0 if seconds < 0 else min(seconds, 315_576_000_000.0)
    d = duration_pb2.Duration()
    d.seconds = int(seconds)
    d.nanos = round((seconds - int(seconds)) * 1e9)
    return d
