"""Inference routes: /api/embed, /api/embeddings, /api/generate, /api/chat and GET /api/ps.

Why explicit translation: Ollama JSON is not protobuf JSON. Generate and chat chunks must keep
`"done": false`, counts are numbers, zero metrics are omitted, created_at is RFC 3339 UTC with 'Z' and
nanoseconds, and expires_at carries the local offset. Embed arrives from gRPC as a stream of batches
(so a client can embed any number of texts without one huge message) and is gathered here into Ollama's
single JSON reply.
"""

import base64
import json

from flask import Blueprint, Response

from corral.protos.ollama.v1 import ollama_pb2 as pb
from corral.rest_shim import body as b
from corral.rest_shim import translate
from corral.rest_shim.client import stub
from corral.rest_shim.errors import HTTPError
from corral.rest_shim.streaming import json_response, ndjson

bp = Blueprint("inference", __name__)
THINK_LEVELS = ("high", "medium", "low", "max")
_F32 = "{:.9g}".format  # nine significant digits: the shortest format that round-trips any float32


def _common(req, body: dict) -> None:
    """options and keep_alive, shared by every inference request."""
    opts = b.options(body)
    if opts is not None:
        req.options.CopyFrom(opts)
    keep = b.keep_alive(body)
    if keep is not None:
        req.keep_alive.CopyFrom(keep)


def _format(body: dict) -> str:
    value = body.get("format")
    if value is None or value == "":
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"))


def _think(body: dict) -> str:
    value = body.get("think")
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str) and value in THINK_LEVELS:
        return value
    if isinstance(value, str):  # Ollama's api.ThinkValue texts ("true" as a string is no boolean)
        raise HTTPError(400, f'invalid think value: {json.dumps(value)} (must be "high", "medium", "low", "max", '
                             "true, or false)")
    raise HTTPError(400, 'think must be a boolean or string ("high", "medium", "low", "max", true, or false)')


def _images(body: dict, key: str = "images") -> list[bytes]:
    out = []
    for item in b.get_list(body, key):
        try:
            out.append(base64.b64decode(item, validate=True))
        except (ValueError, TypeError):
            raise HTTPError(400, "illegal base64 data at input byte 0") from None
    return out


def _flags(req, body: dict) -> None:
    for key in ("truncate", "shift"):
        value = b.get_bool(body, key)
        if value is not None:
            setattr(req, key, value)
    req.logprobs = bool(b.get_bool(body, "logprobs", False))
    req.top_logprobs = b.get_int(body, "top_logprobs")


@bp.route("/api/embed", methods=["POST"])
def embed():
    body = b.json_body("EmbedRequest")
    value = body.get("input")
    if value is None or isinstance(value, str):
        inputs = [value] if value else []
    elif isinstance(value, list) and all(isinstance(v, str) for v in value):
        inputs = value
    else:
        raise HTTPError(400, "invalid input type")
    model = b.get_str(body, "model")
    req = pb.EmbedRequest(model=model, input=inputs, dimensions=b.get_int(body, "dimensions"))
    truncate = b.get_bool(body, "truncate")
    if truncate is not None:
        req.truncate = truncate
    _common(req, body)
    rows: list[str] = []
    last = None
    for message in stub().Embed(req):
        rows.extend("[" + ",".join(map(_F32, e.values)) + "]" for e in message.embeddings)
        last = message
    out = {"model": model, "embeddings": None}
    if last is not None:
        translate.metrics(last.metrics, out)
        for key in ("prompt_eval_duration", "eval_count", "eval_duration"):
            out.pop(key, None)
    # The vectors are spliced in as text: "%.9g" round-trips every float32 exactly, is ~40 % shorter
    # than Python's float64 repr and twice as fast to produce as json.dumps (the model value is a JSON
    # string, so it cannot contain the unescaped marker).
    text = json.dumps(out, ensure_ascii=False, separators=(",", ":"))
    text = text.replace('"embeddings":null', '"embeddings":[' + ",".join(rows) + "]", 1)
    return Response(text, status=200, content_type="application/json; charset=utf-8")


@bp.route("/api/embeddings", methods=["POST"])
def embeddings():
    body = b.json_body("EmbeddingRequest")
    req = pb.EmbeddingsRequest(model=b.get_str(body, "model"), prompt=b.get_str(body, "prompt"))
    _common(req, body)
    return json_response({"embedding": list(stub().Embeddings(req).embedding)})


@bp.route("/api/ps", methods=["GET"])
def ps():
    running = stub().ListRunning(pb.ListRunningRequest())
    return json_response({"models": [
        {
            "name": m.name,
            "model": m.model,
            "size": m.size,
            "digest": m.digest,
            "details": translate.details(m.details),
            "expires_at": translate.rfc3339(m.expires_at),
            "size_vram": m.size_vram,
            "context_length": m.context_length,
        }
        for m in running.models
    ]})


def _final(out: dict, message, with_context: bool) -> dict:
    if message.done:
        if message.done_reason:
            out["done_reason"] = message.done_reason
        if with_context and message.context:
            out["context"] = list(message.context)
        translate.metrics(message.metrics, out)
    return out


def _generate_json(m) -> dict:
    out = {"model": m.model, "created_at": translate.rfc3339(m.created_at, utc=True), "response": m.response}
    if m.thinking:
        out["thinking"] = m.thinking
    out["done"] = m.done
    return _logprobs(_final(out, m, True), m)


def _logprobs(out: dict, m) -> dict:
    """Ollama's `logprobs` list (api.Logprob): token, logprob, bytes as byte values (omitted when empty),
    top_logprobs when asked for."""
    if m.logprobs:
        out["logprobs"] = [_token_logprob(lp, lp.top_logprobs) for lp in m.logprobs]
    return out


def _token_logprob(lp, top=()) -> dict:
    d: dict = {"token": lp.token, "logprob": lp.logprob}
    if lp.token_bytes:
        d["bytes"] = list(lp.token_bytes)
    if top:
        d["top_logprobs"] = [_token_logprob(t) for t in top]
    return d


def _merge(key: str):
    """stream:false: the last object, with the text pieces (and thinking, tool calls, logprobs)
    concatenated."""

    def merge(lines: list[dict]) -> dict:
        if not lines:
            return {}
        out = dict(lines[-1])
        logprobs = [lp for line in lines for lp in line.get("logprobs", ())]
        if logprobs:
            out["logprobs"] = logprobs
        if key == "response":
            out["response"] = "".join(line.get("response", "") for line in lines)
            thinking = "".join(line.get("thinking", "") for line in lines)
        else:
            message = dict(out["message"])
            message["content"] = "".join(line["message"].get("content", "") for line in lines)
            thinking = "".join(line["message"].get("thinking", "") for line in lines)
            if thinking:
                message["thinking"] = thinking
            calls = [call for line in lines for call in line["message"].get("tool_calls", ())]
            if calls:
                message["tool_calls"] = calls
            out["message"] = message
            return out
        if thinking:
            out["thinking"] = thinking
        return out

    return merge


@bp.route("/api/generate", methods=["POST"])
def generate():
    body = b.json_body("GenerateRequest")
    req = pb.GenerateRequest(
        model=b.get_str(body, "model"), prompt=b.get_str(body, "prompt"), suffix=b.get_str(body, "suffix"),
        images=_images(body), raw=bool(b.get_bool(body, "raw", False)), format=_format(body), think=_think(body),
    )
    for key in ("system", "template"):
        if body.get(key) is not None:
            setattr(req, key, b.get_str(body, key))
    req.context.extend(b.get_int32_list(body, "context"))
    _flags(req, body)
    _common(req, body)
    # An empty prompt only loads (or, with keep_alive 0, unloads) the model: Ollama answers that with one
    # application/json object whatever `stream` says.
    stream = b.stream_flag(body) and bool(req.prompt)
    return ndjson(stub().Generate(req), _generate_json, stream, merge=_merge("response"))


def _chat_message(d) -> pb.Message:
    if not isinstance(d, dict):
        raise HTTPError(400, "json: cannot unmarshal into Go struct field ChatRequest.messages of type api.Message")
    m = pb.Message(role=b.get_str(d, "role"), content=b.get_str(d, "content"),
                   thinking=b.get_str(d, "thinking"), tool_name=b.get_str(d, "tool_name"),
                   tool_call_id=b.get_str(d, "tool_call_id"), images=_images(d))
    for call in b.get_list(d, "tool_calls"):
        if not isinstance(call, dict):
            kind = {list: "array", str: "string", bool: "bool", int: "number", float: "number"}.get(type(call), "value")
            raise HTTPError(400, f"json: cannot unmarshal {kind} into Go struct field "
                                 "Message.messages.tool_calls of type api.ToolCall")
        m.tool_calls.append(b.to_struct(call))
    return m


def _chat_json(m) -> dict:
    out = {"model": m.model, "created_at": translate.rfc3339(m.created_at, utc=True),
           "message": translate.message(m.message), "done": m.done}
    return _logprobs(_final(out, m, False), m)


@bp.route("/api/chat", methods=["POST"])
def chat():
    body = b.json_body("ChatRequest")
    req = pb.ChatRequest(model=b.get_str(body, "model"), format=_format(body), think=_think(body),
                         messages=[_chat_message(d) for d in b.get_list(body, "messages")])
    for tool in b.get_list(body, "tools"):
        if not isinstance(tool, dict):
            raise HTTPError(400, "json: cannot unmarshal into Go struct field ChatRequest.tools of type api.Tool")
        req.tools.append(b.to_struct(tool))
    _flags(req, body)
    _common(req, body)
    stream = b.stream_flag(body) and bool(req.messages)  # no messages: the load/unload reply, one object
    return ndjson(stub().Chat(req), _chat_json, stream, merge=_merge("message"))
