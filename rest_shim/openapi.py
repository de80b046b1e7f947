"""The OpenAPI 3.1 document of the REST surface, generated from the proto and what the shim adds.

Why generated: the proto is the API (each rpc carries its Ollama route as a google.api.http rule), so the
operations, their methods and paths, and the request fields come from its descriptors. What the shim
adds on top is written here, in one table each, because it lives in the shim's code and not in the
proto: the JSON forms Ollama accepts where protobuf has one type (`keep_alive` as seconds or a Go
duration, `format` as "json" or a schema, `input` as a string or a list), legacy fields (`name`,
`quantization`, `stream`), gRPC-only fields hidden from REST (`input_tokens`), NDJSON streams, and the
OpenAI-compatible `/v1` routes (another vendor's contract, so no rule of ours).

The committed rest_shim/openapi.json is this module's output (`make openapi` writes it, a test compares);
GET /api/openapi.json serves the committed file. Run as a script: `python -m corral.rest_shim.openapi [PATH]`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from google.api import annotations_pb2
from google.protobuf.descriptor import FieldDescriptor as FD

from corral.protos.ollama.v1 import ollama_pb2 as pb
from corral.service.version import OLLAMA_COMPAT_VERSION

DOCUMENT = Path(__file__).with_name("openapi.json")
NDJSON = "application/x-ndjson"

_INT32 = {"type": "integer", "minimum": -(2**31), "maximum": 2**31 - 1}
_SCALARS: dict[int, dict] = {
    FD.TYPE_STRING: {"type": "string"}, FD.TYPE_BOOL: {"type": "boolean"},
    FD.TYPE_INT32: _INT32, FD.TYPE_SINT32: _INT32, FD.TYPE_SFIXED32: _INT32,
    FD.TYPE_UINT32: {"type": "integer", "minimum": 0, "maximum": 2**32 - 1},
    FD.TYPE_INT64: {"type": "integer"}, FD.TYPE_SINT64: {"type": "integer"}, FD.TYPE_UINT64: {"type": "integer"},
    FD.TYPE_FIXED64: {"type": "integer"}, FD.TYPE_SFIXED64: {"type": "integer"}, FD.TYPE_FIXED32: {"type": "integer"},
    FD.TYPE_DOUBLE: {"type": "number"}, FD.TYPE_FLOAT: {"type": "number"},
    FD.TYPE_BYTES: {"type": "string", "contentEncoding": "base64"},
}
_WELL_KNOWN: dict[str, dict] = {
    "google.protobuf.Struct": {"type": "object"},
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    # Ollama's keep_alive: seconds (negative = forever) or a Go duration string ("5m", "1h30m").
    "google.protobuf.Duration": {"type": ["number", "string"]},
}

# -- what the shim adds, per request message -----------------------------------------------------------

_STREAM = {"type": "boolean", "default": True, "description": "false: one JSON object instead of NDJSON lines"}
_NAME = {"type": "string", "description": "legacy alias of `model`"}
REQUEST_EXTRA: dict[str, dict[str, dict]] = {
    "ShowRequest": {"name": _NAME},
    "DeleteRequest": {"name": _NAME},
    "PullRequest": {"name": _NAME, "stream": _STREAM},
    "PushRequest": {"name": _NAME, "stream": _STREAM},
    "CreateRequest": {"name": _NAME, "stream": _STREAM, "quantization": {"type": "string"},
                      "license": {"type": ["string", "array"], "items": {"type": "string"}}},
    "GenerateRequest": {"stream": _STREAM, "format": {"type": ["string", "object"]},
                        "think": {"type": ["boolean", "string"]}},
    "ChatRequest": {"stream": _STREAM, "format": {"type": ["string", "object"]},
                    "think": {"type": ["boolean", "string"]}},
    "EmbedRequest": {"input": {"type": ["string", "array"], "items": {"type": "string"}}},
}
REQUEST_HIDDEN = {"EmbedRequest": {"input_tokens"}}  # gRPC only (/v1/embeddings takes token ids)
REQUIRED = {"CopyRequest": ["source", "destination"]}

# Response shapes where Ollama's JSON is not the proto's (metrics flattened into the object, token bytes
# as numbers, vectors as arrays of numbers).
_METRICS = {k: {"type": "integer"} for k in ("total_duration", "load_duration", "prompt_eval_count",
                                             "prompt_eval_duration", "eval_count", "eval_duration")}
_LOGPROBS = {"type": "array", "items": {"type": "object", "properties": {
    "token": {"type": "string"}, "logprob": {"type": "number"},
    "bytes": {"type": "array", "items": {"type": "integer"}}, "top_logprobs": {"type": "array"}}}}
RESPONSE_OVERRIDE: dict[str, dict] = {
    "GenerateResponse": {"type": "object", "properties": {
        "model": {"type": "string"}, "created_at": {"type": "string", "format": "date-time"},
        "response": {"type": "string"}, "thinking": {"type": "string"}, "done": {"type": "boolean"},
        "done_reason": {"type": "string"}, "context": {"type": "array", "items": {"type": "integer"}},
        "logprobs": _LOGPROBS, **_METRICS}},
    "ChatResponse": {"type": "object", "properties": {
        "model": {"type": "string"}, "created_at": {"type": "string", "format": "date-time"},
        "message": {"$ref": "#/components/schemas/Message"}, "done": {"type": "boolean"},
        "done_reason": {"type": "string"}, "logprobs": _LOGPROBS, **_METRICS}},
    "EmbedResponse": {"type": "object", "properties": {
        "model": {"type": "string"},
        "embeddings": {"type": "array", "items": {"type": "array", "items": {"type": "number"}}},
        **{k: _METRICS[k] for k in ("total_duration", "load_duration", "prompt_eval_count")}}},
    "VersionResponse": {"type": "object", "properties": {"version": {"type": "string"}}},
}
# rpcs whose REST answer has no body (200 or 201 and nothing else).
EMPTY_RESPONSE = {"Copy", "Delete", "BlobExists", "PushBlob"}

ERROR = {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}}
# The error statuses every JSON route may answer (the service's codes mapped by rest_shim/errors.py; 500 is
# a runner or disk failure, the documented 5xx; 503 a full queue or a draining server).
ERROR_STATUSES = {"400": "invalid request", "404": "model or blob not found",
                  "408": "request not received in time (CORRAL_REQUEST_READ_TIMEOUT)",
                  "413": "request body too large", "414": "request line too long",
                  "431": "request headers too large (CORRAL_MAX_HEADER_BYTES)",
                  "500": "runner or storage failure", "503": "server busy or shutting down",
                  "507": "no space left on device"}


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


class _Builder:
    def __init__(self) -> None:
        self.schemas: dict[str, dict] = {}

    def field(self, f) -> dict:
        if f.type == FD.TYPE_MESSAGE:
            entry = f.message_type
            if entry.GetOptions().map_entry:
                return {"type": "object", "additionalProperties": self.field(entry.fields_by_name["value"])}
            schema = self.message(entry.full_name, entry)
        elif f.type == FD.TYPE_ENUM:
            schema = {"type": "string", "enum": [v.name for v in f.enum_type.values]}
        else:
            schema = dict(_SCALARS[f.type])
        if f.is_repeated:
            return {"type": "array", "items": schema}
        return schema

    def message(self, full_name: str, desc, *, request: bool = False) -> dict:
        if full_name in _WELL_KNOWN:
            return dict(_WELL_KNOWN[full_name])
        name = desc.name
        if name in RESPONSE_OVERRIDE and not request:
            self.schemas.setdefault(name, RESPONSE_OVERRIDE[name])
            return _ref(name)
        if name not in self.schemas:
            self.schemas[name] = {}  # placeholder against recursion
            props = {f.name: self.field(f) for f in desc.fields if f.name not in REQUEST_HIDDEN.get(name, ())}
            if request:
                props.update(REQUEST_EXTRA.get(name, {}))
            schema: dict = {"type": "object", "properties": dict(sorted(props.items()))}
            if name in REQUIRED:
                schema["required"] = REQUIRED[name]
            self.schemas[name] = schema
        return _ref(name)


def _bindings(rule) -> list[tuple[str, str, str]]:
    kind = rule.WhichOneof("pattern")
    out = []
    if kind == "custom":
        out.append((rule.custom.kind.lower(), rule.custom.path, rule.body))
    elif kind is not None:
        out.append((kind, getattr(rule, kind), rule.body))
    for extra in rule.additional_bindings:
        out += _bindings(extra)
    return out


def _errors(schema: str = "Error") -> dict:
    return {code: {"description": text, "content": {"application/json": {"schema": _ref(schema)}}}
            for code, text in ERROR_STATUSES.items()}


def _rpc_operation(b: _Builder, method, verb: str, path: str, body: str) -> dict:
    op: dict = {"operationId": method.name if verb not in ("head",) or method.name == "BlobExists"
                else f"{method.name}Head", "tags": ["ollama"],
                "summary": f"rpc ollama.v1.Ollama/{method.name}"}
    params = [p.strip("{}") for p in path.split("/") if p.startswith("{")]
    if params:
        op["parameters"] = [{"name": p, "in": "path", "required": True,
                             "schema": {"type": "string", "pattern": "^sha256[:-][0-9a-f]{64}$"}
                             if p == "digest" else {"type": "string"}} for p in params]
    if body == "*":
        # No body is "missing request body" (400) on every Ollama JSON route.
        op["requestBody"] = {"required": True, "content": {"application/json": {
            "schema": b.message(method.input_type.full_name, method.input_type, request=True)}}}
    elif body:
        op["requestBody"] = {"required": True, "content": {"application/octet-stream": {
            "schema": {"type": "string", "format": "binary"}}}}
    if method.name in EMPTY_RESPONSE:
        ok = {"description": "done (no body)"}
        responses: dict = {"200": ok}
        if method.name == "PushBlob":
            responses["201"] = {"description": "created (no body)"}
    else:
        out = b.message(method.output_type.full_name, method.output_type)
        content: dict = {"application/json": {"schema": out}}
        if method.server_streaming and method.name != "Embed":
            content[NDJSON] = {"schema": out, "description": "one JSON object per line (stream: true)"}
        responses = {"200": {"description": "success", "content": content}}
    if verb != "head":
        responses.update(_errors())
    elif method.name == "BlobExists":
        responses["404"] = {"description": "blob not found"}
    op["responses"] = responses
    return op


def _json_op(op_id: str, summary: str, body: dict | None, response: dict, tag: str,
             params: list | None = None, sse: bool = False) -> dict:
    op: dict = {"operationId": op_id, "tags": [tag], "summary": summary}
    if params:
        op["parameters"] = params
    if body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    content: dict[str, dict] = {"application/json": {"schema": response}}
    if sse:
        content["text/event-stream"] = {"schema": {"type": "string"}, "description": "stream: true"}
    op["responses"] = {"200": {"description": "success", "content": content},
                       **_errors("OpenAIError" if tag == "openai" else "Error")}
    return op


_OBJ = {"type": "object"}
_STR, _INT, _NUM = {"type": "string"}, {"type": "integer"}, {"type": "number"}
_STOP = {"type": ["string", "array", "null"], "items": _STR}
# OpenAI's message: content as text or parts (text, image_url), tool calls on assistant messages.
_OPENAI_PART = {"type": "object", "required": ["type"], "properties": {
    "type": {"type": "string", "enum": ["text", "image_url"]}, "text": _STR,
    "image_url": {"type": ["string", "object"], "properties": {"url": _STR}}}}
_OPENAI_TOOL_CALL = {"type": "object", "properties": {
    "id": _STR, "index": _INT, "type": {"type": "string", "enum": ["function"]},
    "function": {"type": "object", "required": ["name"], "properties": {"name": _STR, "arguments": _STR}}}}
_OPENAI_MESSAGE = {"type": "object", "required": ["role"], "properties": {
    "role": {"type": "string", "enum": ["system", "developer", "user", "assistant", "tool"]},
    "content": {"type": ["string", "array", "null"], "items": _OPENAI_PART},
    "name": _STR, "tool_call_id": _STR, "reasoning": _STR,
    "tool_calls": {"type": "array", "items": _OPENAI_TOOL_CALL}}}
_OPENAI_TOOL = {"type": "object", "required": ["type", "function"], "properties": {
    "type": {"type": "string", "enum": ["function"]},
    "function": {"type": "object", "required": ["name"], "properties": {
        "name": _STR, "description": _STR, "parameters": _OBJ}}}}
_STREAM_OPTIONS = {"type": "object", "properties": {"include_usage": {"type": "boolean"}}}
_OPENAI_CHAT = {"type": "object", "required": ["model", "messages"], "properties": {
    "model": _STR, "messages": {"type": "array", "minItems": 1, "items": _OPENAI_MESSAGE},
    "stream": {"type": "boolean"}, "stream_options": _STREAM_OPTIONS, "max_tokens": _INT32,
    "max_completion_tokens": _INT32, "temperature": _NUM, "top_p": _NUM, "seed": _INT32, "stop": _STOP,
    "frequency_penalty": _NUM, "presence_penalty": _NUM,
    "response_format": {"type": "object", "required": ["type"], "properties": {
        "type": {"type": "string", "enum": ["text", "json_object", "json_schema"]},
        "json_schema": {"type": "object", "properties": {"name": _STR, "schema": _OBJ,
                                                         "strict": {"type": "boolean"}}}}},
    "tools": {"type": "array", "items": _OPENAI_TOOL}, "tool_choice": {"type": ["string", "object"]},
    "logprobs": {"type": "boolean"}, "top_logprobs": {"type": "integer", "minimum": 0, "maximum": 20},
    "reasoning_effort": {"type": "string", "enum": ["high", "medium", "low", "none"]},
    "reasoning": {"type": "object", "properties": {"effort": {"type": "string"}}}}}
_OPENAI_COMPLETION = {"type": "object", "required": ["model", "prompt"], "properties": {
    "model": _STR, "prompt": _STR, "suffix": _STR, "echo": {"type": "boolean"},
    "stream": {"type": "boolean"}, "stream_options": _STREAM_OPTIONS, "max_tokens": _INT32,
    "temperature": _NUM, "top_p": _NUM, "seed": _INT32, "stop": _STOP, "frequency_penalty": _NUM,
    "presence_penalty": _NUM}}
_TOKEN_IDS = {"type": "array", "items": {"type": "integer", "minimum": 0}}
_OPENAI_EMBED = {"type": "object", "required": ["model", "input"], "properties": {
    "model": _STR, "dimensions": _INT32, "encoding_format": {"type": "string", "enum": ["float", "base64"]},
    "input": {"anyOf": [_STR, {"type": "array", "items": _STR}, _TOKEN_IDS,
                        {"type": "array", "items": _TOKEN_IDS}]}}}

# What the /v1 routes answer (the shapes the official openai client parses).
_USAGE = {"type": "object", "required": ["prompt_tokens", "total_tokens"], "properties": {
    "prompt_tokens": _INT, "completion_tokens": _INT, "total_tokens": _INT}}
_OPENAI_LOGPROB = {"type": "object", "required": ["token", "logprob"], "properties": {
    "token": _STR, "logprob": _NUM, "bytes": {"type": ["array", "null"], "items": _INT},
    "top_logprobs": {"type": "array", "items": _OBJ}}}
_FINISH = {"type": ["string", "null"], "enum": ["stop", "length", "tool_calls", None]}
_OPENAI_CHAT_REPLY = {"type": "object", "required": ["id", "object", "created", "model", "choices"],
                      "properties": {
    "id": _STR, "object": {"const": "chat.completion"}, "created": _INT, "model": _STR,
    "system_fingerprint": _STR, "usage": _USAGE,
    "choices": {"type": "array", "items": {"type": "object", "required": ["index", "message", "finish_reason"],
                                           "properties": {
        "index": _INT, "finish_reason": _FINISH,
        "message": {"type": "object", "required": ["role", "content"], "properties": {
            "role": {"const": "assistant"}, "content": {"type": ["string", "null"]}, "reasoning": _STR,
            "tool_calls": {"type": "array", "items": _OPENAI_TOOL_CALL}}},
        "logprobs": {"type": ["object", "null"], "properties": {
            "content": {"type": "array", "items": _OPENAI_LOGPROB}}}}}}}}
_OPENAI_COMPLETION_REPLY = {"type": "object", "required": ["id", "object", "created", "model", "choices"],
                            "properties": {
    "id": _STR, "object": {"const": "text_completion"}, "created": _INT, "model": _STR,
    "system_fingerprint": _STR, "usage": _USAGE,
    "choices": {"type": "array", "items": {"type": "object", "required": ["text", "index", "finish_reason"],
                                           "properties": {
        "text": _STR, "index": _INT, "finish_reason": _FINISH, "logprobs": {"type": ["object", "null"]}}}}}}
_OPENAI_EMBED_REPLY = {"type": "object", "required": ["object", "data", "model", "usage"], "properties": {
    "object": {"const": "list"}, "model": _STR, "usage": _USAGE,
    "data": {"type": "array", "items": {"type": "object", "required": ["object", "embedding", "index"],
                                        "properties": {
        "object": {"const": "embedding"}, "index": _INT,
        "embedding": {"type": ["array", "string"], "items": _NUM}}}}}}
_OPENAI_MODEL = {"type": "object", "required": ["id", "object", "created", "owned_by"], "properties": {
    "id": _STR, "object": {"const": "model"}, "created": _INT, "owned_by": _STR}}
_OPENAI_MODELS = {"type": "object", "required": ["object", "data"], "properties": {
    "object": {"const": "list"}, "data": {"type": "array", "items": _OPENAI_MODEL}}}
# OpenAI's error object, with the status the Ollama route would have given.
OPENAI_ERROR = {"type": "object", "required": ["error"], "properties": {"error": {
    "type": "object", "required": ["message", "type"], "properties": {
        "message": _STR, "type": _STR, "param": {"type": ["string", "null"]},
        "code": {"type": ["string", "integer", "null"]}}}}}


def _extra_paths() -> dict[str, dict]:
    """Routes the shim answers without a rule of ours: liveness, this document, metrics and /v1."""
    text = {"200": {"description": "success", "content": {"text/plain": {"schema": {"type": "string"}}}}}
    model_param = [{"name": "model", "in": "path", "required": True, "schema": {"type": "string"}}]
    return {
        "/": {"get": {"operationId": "Root", "tags": ["ollama"], "summary": 'liveness: "Ollama is running"',
                      "responses": text},
              "head": {"operationId": "RootHead", "tags": ["ollama"], "summary": "liveness probe",
                       "responses": {"200": {"description": "running"}}}},
        "/api/openapi.json": {"get": {"operationId": "OpenAPI", "tags": ["corral"], "summary": "this document",
                                      "responses": {"200": {"description": "the OpenAPI document", "content": {
                                          "application/json": {"schema": _OBJ}}}}}},
        "/metrics": {"get": {"operationId": "Metrics", "tags": ["corral"],
                             "summary": "Prometheus metrics (text exposition format)", "responses": text}},
        "/v1/chat/completions": {"post": _json_op("OpenAIChat", "OpenAI chat completions (onto rpc Chat)",
                                                  _OPENAI_CHAT, _OPENAI_CHAT_REPLY, "openai", sse=True)},
        "/v1/completions": {"post": _json_op("OpenAICompletions", "OpenAI completions (onto rpc Generate)",
                                             _OPENAI_COMPLETION, _OPENAI_COMPLETION_REPLY, "openai",
                                             sse=True)},
        "/v1/embeddings": {"post": _json_op("OpenAIEmbeddings", "OpenAI embeddings (onto rpc Embed)",
                                            _OPENAI_EMBED, _OPENAI_EMBED_REPLY, "openai")},
        "/v1/models": {"get": _json_op("OpenAIModels", "OpenAI model list (onto rpc List)", None,
                                       _OPENAI_MODELS, "openai")},
        "/v1/models/{model}": {"get": _json_op("OpenAIModel", "OpenAI model (onto rpc Show)", None,
                                               _OPENAI_MODEL, "openai", params=model_param)},
    }


def build() -> dict:
    """The whole document, deterministic (sorted keys when written)."""
    b = _Builder()
    paths: dict[str, dict] = {}
    for method in pb.DESCRIPTOR.services_by_name["Ollama"].methods:
        options = method.GetOptions()
        if not options.HasExtension(annotations_pb2.http):
            continue
        for verb, path, body in _bindings(options.Extensions[annotations_pb2.http]):
            paths.setdefault(path, {})[verb] = _rpc_operation(b, method, verb, path, body)
    # Ollama answers HEAD wherever it answers GET on these (the rules carry both)
    for path, ops in _extra_paths().items():
        paths.setdefault(path, {}).update(ops)
    schemas = dict(b.schemas)
    schemas["Error"] = ERROR
    schemas["OpenAIError"] = OPENAI_ERROR
    return {
        "openapi": "3.1.0",
        "info": {"title": "Corral (Ollama API)", "version": OLLAMA_COMPAT_VERSION,
                 "description": "Ollama's REST API as served by Corral's REST shim, generated from "
                                "protos/ollama/v1/ollama.proto (google.api.http rules) and the shim's "
                                "additions (rest_shim/openapi.py). Errors are {\"error\": text}."},
        "paths": dict(sorted(paths.items())),
        "components": {"schemas": dict(sorted(schemas.items()))},
    }


def render() -> str:
    return json.dumps(build(), indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: list[str]) -> int:
    target = Path(argv[1]) if len(argv) > 1 else DOCUMENT
    target.write_text(render(), encoding="utf-8")
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
