"""Reading Ollama JSON request bodies the way Ollama's Go decoder does.

Bodies are JSON whatever the Content-Type (curl -d sends form-encoded), and wrong field types answer with
Go's decoder texts, because clients and users compare against what Ollama says.
"""

import json

from flask import request
from google.protobuf import duration_pb2, struct_pb2
from google.protobuf.json_format import ParseDict

from corral.rest_shim.errors import HTTPError
from corral.rest_shim.jsonenc import loads
from corral.store.gocompat import parse_go_duration


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
    """The request's JSON object; 400 with Ollama's texts for an empty or malformed body."""
    raw = request.get_data(cache=True)
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
    if not isinstance(body, dict):
        raise HTTPError(400, f"json: cannot unmarshal {_kind(body)} into Go value of type api.{request_type}")
    body["__type__"] = request_type
    return body


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
    return int(value)


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
