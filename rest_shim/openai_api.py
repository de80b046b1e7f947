"""The OpenAI-compatible API at /v1, translated onto the same gRPC calls as the Ollama routes.

Why: most programs that talk to a local model server speak OpenAI's API (the `openai` SDKs, LangChain's
ChatOpenAI, editors, chat UIs), and Ollama serves it at /v1. Requests become ChatRequest, GenerateRequest,
EmbedRequest, ListRequest and ShowRequest messages; replies are written in OpenAI's shapes (streams as
Server-Sent Events ending with `data: [DONE]`), and every error, including a malformed body, is OpenAI's
`{"error": {"message", "type", "param", "code"}}` with the status the Ollama route would have given.

Where Ollama's OpenAI layer made a choice, this follows it: `temperature` and `top_p` default to 1.0,
`max_tokens` has no default (the model's num_predict applies), `created` is the reply's Unix time,
`system_fingerprint` is "fp_ollama", a model's `owned_by` is its namespace ("library"), and
`reasoning_effort` "none" turns thinking off. Chosen differently: ids carry 24 random hex digits
(`chatcmpl-…`, `cmpl-…`) where Ollama draws one of 999 numbers, so concurrent replies never share one.
"""

from __future__ import annotations

import base64
import itertools
import json
import secrets
import time
from collections.abc import Iterator

import grpc
import numpy as np
from flask import Blueprint, Response

from corral.protos.ollama.v1 import ollama_pb2 as pb
from corral.protos.structs import struct_to_dict
from corral.rest_shim import body as b
from corral.rest_shim.client import stub
from corral.rest_shim.errors import HTTPError, http_status
from corral.store.names import parse_name

bp = Blueprint("openai", __name__)

FINGERPRINT = "fp_ollama"
_ERROR_TYPES = {400: "invalid_request_error", 404: "not_found_error"}
_EFFORTS = ("high", "medium", "low", "none")
_IMAGE_PREFIXES = ("data:;base64,", *(f"data:image/{t};base64," for t in ("jpeg", "jpg", "png", "webp")))


# -- errors -------------------------------------------------------------------------------------------

def error_body(status: int, message: str) -> dict:
    return {"error": {"message": message, "type": _ERROR_TYPES.get(status, "api_error"), "param": None,
                      "code": None}}


def error_response(status: int, message: str) -> Response:
    return Response(json.dumps(error_body(status, message), separators=(",", ":")), status=status,
                    content_type="application/json")


@bp.errorhandler(HTTPError)
def _http_error(exc: HTTPError):
    return error_response(exc.status, exc.message)


@bp.errorhandler(grpc.RpcError)
def _rpc_error(exc: grpc.RpcError):
    return error_response(http_status(exc.code()), exc.details() or exc.code().name.lower())


def _json(obj: dict) -> Response:
    return Response(json.dumps(obj, ensure_ascii=False, separators=(",", ":")), content_type="application/json")


def _sse(obj: dict) -> bytes:
    return b"data: " + json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"


def _new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(12)}"


def _body() -> dict:
    return b.json_body("request")


# -- shared request fields ----------------------------------------------------------------------------

def _number(body: dict, key: str):
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise HTTPError(400, f"invalid type for '{key}': expected a number")
    return value


def _stops(value) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(s, str) for s in value):
        return value
    raise HTTPError(400, "invalid type for 'stop' field: expected a string or an array of strings")


def _options(body: dict, max_key: str = "max_tokens") -> dict:
    """OpenAI sampling fields -> Ollama options, with Ollama's OpenAI-layer defaults."""
    options: dict = {"temperature": 1.0, "top_p": 1.0}
    for key, option in (("temperature", "temperature"), ("top_p", "top_p"), ("seed", "seed"),
                        ("frequency_penalty", "frequency_penalty"), ("presence_penalty", "presence_penalty"),
                        (max_key, "num_predict"), ("max_tokens", "num_predict")):
        value = _number(body, key)
        if value is not None:
            options[option] = value
    stops = _stops(body.get("stop"))
    if stops is not None:
        options["stop"] = stops
    return options


def _stream_flags(body: dict) -> tuple[bool, bool]:
    stream = bool(b.get_bool(body, "stream", False))
    stream_options = body.get("stream_options") or {}
    if not isinstance(stream_options, dict):
        raise HTTPError(400, "invalid type for 'stream_options': expected an object")
    return stream, bool(stream and stream_options.get("include_usage"))


def _usage(metrics) -> dict:
    return {"prompt_tokens": metrics.prompt_eval_count, "completion_tokens": metrics.eval_count,
            "total_tokens": metrics.prompt_eval_count + metrics.eval_count}


# -- chat ---------------------------------------------------------------------------------------------

def _image(part: dict) -> bytes:
    value = part.get("image_url")
    url = value.get("url") if isinstance(value, dict) else value
    if not isinstance(url, str):
        raise HTTPError(400, "invalid message format")
    for prefix in _IMAGE_PREFIXES:
        if url.startswith(prefix):
            try:
                return base64.b64decode(url[len(prefix):], validate=True)
            except ValueError:
                raise HTTPError(400, "invalid message format") from None
    raise HTTPError(400, "invalid image input")


def _tool_calls(calls) -> list:
    """OpenAI tool calls (arguments as a JSON string) -> Ollama's (arguments as an object)."""
    if calls is not None and not isinstance(calls, list):
        raise HTTPError(400, "invalid tool calls: expected an array")
    out = []
    for call in calls or []:
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict):
            raise HTTPError(400, "invalid tool call")
        try:
            arguments = json.loads(function.get("arguments") or "{}")
        except (TypeError, ValueError):
            raise HTTPError(400, "invalid tool call arguments") from None
        out.append(b.to_struct({"function": {"name": function.get("name") or "", "arguments": arguments}}))
    return out


def _tool_name(messages: list, message: dict) -> str:
    """A tool reply's tool name: its `name`, else the name of the call its tool_call_id answers."""
    if message.get("name"):
        return str(message["name"])
    wanted = message.get("tool_call_id")
    for earlier in reversed(messages):
        calls = earlier.get("tool_calls") if isinstance(earlier, dict) else None
        for call in calls if isinstance(calls, list) else []:
            function = call.get("function") if isinstance(call, dict) else None
            if isinstance(function, dict) and call.get("id") == wanted:
                return str(function.get("name") or "")
    return ""


def _messages(messages: list) -> list[pb.Message]:
    out: list[pb.Message] = []
    for m in messages:
        if not isinstance(m, dict):
            raise HTTPError(400, "invalid message format")
        role = str(m.get("role") or "")
        tool_name = _tool_name(messages, m) if role.lower() == "tool" else ""
        content = m.get("content")
        calls = _tool_calls(m.get("tool_calls"))
        thinking = str(m.get("reasoning") or "")
        if content is None or isinstance(content, str):
            if content is None and not calls:
                raise HTTPError(400, "invalid message content type: <nil>")
            out.append(pb.Message(role=role, content=content or "", thinking=thinking, tool_calls=calls,
                                  tool_name=tool_name, tool_call_id=str(m.get("tool_call_id") or "")))
        elif isinstance(content, list):
            for part in content:
                kind = part.get("type") if isinstance(part, dict) else None
                if kind == "text" and isinstance(part.get("text"), str):
                    out.append(pb.Message(role=role, content=part["text"]))
                elif kind == "image_url":
                    out.append(pb.Message(role=role, images=[_image(part)]))
                else:
                    raise HTTPError(400, "invalid message format")
            if out and (calls or tool_name):
                out[-1].tool_calls.extend(calls)
                out[-1].tool_name = tool_name
                out[-1].thinking = thinking
        else:
            raise HTTPError(400, f"invalid message content type: {type(content).__name__}")
    return out


def _format(body: dict) -> str:
    fmt = body.get("response_format")
    if fmt is None:
        return ""
    if not isinstance(fmt, dict):
        raise HTTPError(400, "invalid type for 'response_format': expected an object")
    kind = str(fmt.get("type") or "").strip().lower()
    if kind == "json_object":
        return "json"
    if kind == "json_schema":
        schema = (fmt.get("json_schema") or {}).get("schema")
        return json.dumps(schema, separators=(",", ":")) if schema is not None else ""
    return ""


def _think(body: dict) -> str:
    effort = body.get("reasoning_effort")
    reasoning = body.get("reasoning")
    if isinstance(reasoning, dict) and reasoning.get("effort"):
        effort = reasoning["effort"]
    if effort is None or effort == "":
        return ""
    if effort not in _EFFORTS:
        raise HTTPError(400, f"invalid reasoning value: '{effort}' (must be \"high\", \"medium\", \"low\", "
                             "or \"none\")")
    return "false" if effort == "none" else effort


def chat_request(body: dict) -> pb.ChatRequest:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise HTTPError(400, "[] is too short - 'messages'")
    req = pb.ChatRequest(model=b.get_str(body, "model"), messages=_messages(messages), format=_format(body),
                         think=_think(body))
    tools = body.get("tools") or []
    if not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools):
        raise HTTPError(400, "invalid type for 'tools': expected an array of objects")
    if body.get("tool_choice") != "none":  # "none" means: answer in text, so the model sees no tools
        req.tools.extend(b.to_struct(t) for t in tools)
    req.options.CopyFrom(b.to_struct(_options(body, "max_completion_tokens")))
    req.logprobs = bool(b.get_bool(body, "logprobs", False))
    req.top_logprobs = b.get_int(body, "top_logprobs")
    return req


def _calls_out(calls) -> list[dict]:
    out = []
    for i, call in enumerate(calls):
        data = struct_to_dict(call)
        function = data.get("function") or {}
        arguments = function.get("arguments") or {}
        out.append({"id": data.get("id") or _new_id("call"), "index": function.get("index", i),
                    "type": "function", "function": {"name": function.get("name", ""),
                                                     "arguments": json.dumps(arguments, separators=(",", ":"))}})
    return out


def _logprobs_out(entries) -> list[dict]:
    """Ollama's logprobs (pb.Logprob) as OpenAI's choices[].logprobs.content entries."""

    def one(lp) -> dict:
        return {"token": lp.token, "logprob": lp.logprob, "bytes": list(lp.token_bytes) or None}

    return [{**one(lp), "top_logprobs": [one(t) for t in lp.top_logprobs]} for lp in entries]


def _finish(reason: str, tool_calls: bool) -> str | None:
    """OpenAI's finish_reason: its clients know stop, length and tool_calls, so Ollama's other done reasons
    ("load" for an empty prompt, "unload") are a plain stop."""
    if not reason:
        return None
    if tool_calls:
        return "tool_calls"
    return "length" if reason == "length" else "stop"


@bp.route("/v1/chat/completions", methods=["POST"])
def chat_completions():
    body = _body()
    stream, include_usage = _stream_flags(body)
    req = chat_request(body)
    call = stub().Chat(req)
    ident, created = _new_id("chatcmpl"), int(time.time())
    head = {"id": ident, "created": created, "model": req.model, "system_fingerprint": FINGERPRINT}
    if not stream:
        content, reasoning, calls, logprobs, last = [], [], [], [], None
        for m in call:
            content.append(m.message.content)
            reasoning.append(m.message.thinking)
            calls.extend(m.message.tool_calls)
            logprobs.extend(m.logprobs)
            last = m
        message: dict = {"role": "assistant", "content": "".join(content)}
        if any(reasoning):
            message["reasoning"] = "".join(reasoning)
        if calls:
            message["tool_calls"] = _calls_out(calls)
        reason = _finish(last.done_reason if last else "stop", bool(calls))
        return _json({**head, "object": "chat.completion",
                      "choices": [{"index": 0, "message": message, "finish_reason": reason,
                                   "logprobs": {"content": _logprobs_out(logprobs)} if req.logprobs else None}],
                      "usage": _usage(last.metrics) if last else _usage(pb.Metrics())})
    return _event_stream(call, lambda m, sent: _chat_chunk(head, m, sent), include_usage,
                         lambda usage: {**head, "object": "chat.completion.chunk", "choices": [], "usage": usage})


def _chat_chunk(head: dict, m: pb.ChatResponse, tool_calls_sent: bool) -> dict:
    delta: dict = {"role": "assistant", "content": m.message.content}
    if m.message.thinking:
        delta["reasoning"] = m.message.thinking
    if m.message.tool_calls:
        delta["tool_calls"] = _calls_out(m.message.tool_calls)
    reason = _finish(m.done_reason if m.done else "", tool_calls_sent or bool(m.message.tool_calls))
    choice: dict = {"index": 0, "delta": delta, "finish_reason": reason}
    if m.logprobs:
        choice["logprobs"] = {"content": _logprobs_out(m.logprobs)}
    return {**head, "object": "chat.completion.chunk", "choices": [choice]}


def _event_stream(call, chunk, include_usage: bool, usage_chunk) -> Response:
    """SSE over a streaming call. The first message is read before answering, so an error that comes
    before any output (unknown model, bad options) is an HTTP status, as the Ollama routes do."""
    messages = iter(call)
    try:
        first = next(messages, None)
    except grpc.RpcError as exc:
        call.cancel()
        return _rpc_error(exc)

    def events() -> Iterator[bytes]:
        sent_calls = False
        try:
            for m in itertools.chain([first] if first is not None else [], messages):
                data = chunk(m, sent_calls)
                sent_calls = sent_calls or "tool_calls" in data["choices"][0].get("delta", {})
                yield _sse(data)
                if m.done and include_usage:
                    yield _sse(usage_chunk(_usage(m.metrics)))
            yield b"data: [DONE]\n\n"
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.CANCELLED:
                yield _sse(error_body(http_status(exc.code()), exc.details() or exc.code().name.lower()))
        finally:
            call.cancel()

    return Response(events(), content_type="text/event-stream", headers={"Cache-Control": "no-cache"})


# -- completions --------------------------------------------------------------------------------------

def completion_request(body: dict) -> tuple[pb.GenerateRequest, str]:
    prompt = body.get("prompt", "")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise HTTPError(400, "invalid type for 'prompt': expected a string")
    req = pb.GenerateRequest(model=b.get_str(body, "model"), prompt=prompt, suffix=b.get_str(body, "suffix"))
    req.options.CopyFrom(b.to_struct(_options(body)))
    return req, prompt if b.get_bool(body, "echo", False) else ""


@bp.route("/v1/completions", methods=["POST"])
def completions():
    body = _body()
    stream, include_usage = _stream_flags(body)
    req, echo = completion_request(body)
    call = stub().Generate(req)
    ident, created = _new_id("cmpl"), int(time.time())
    head = {"id": ident, "object": "text_completion", "created": created, "model": req.model,
            "system_fingerprint": FINGERPRINT}
    if not stream:
        text, last = [echo], None
        for m in call:
            text.append(m.response)
            last = m
        reason = _finish(last.done_reason if last else "stop", False)
        return _json({**head, "choices": [{"text": "".join(text), "index": 0, "logprobs": None,
                                           "finish_reason": reason}],
                      "usage": _usage(last.metrics) if last else _usage(pb.Metrics())})
    echoed = [echo]

    def chunk(m: pb.GenerateResponse, _sent: bool) -> dict:
        text = echoed.pop() + m.response if echoed else m.response
        return {**head, "choices": [{"text": text, "index": 0, "logprobs": None,
                                     "finish_reason": _finish(m.done_reason if m.done else "", False)}]}

    return _event_stream(call, chunk, include_usage, lambda usage: {**head, "choices": [], "usage": usage})


# -- embeddings ---------------------------------------------------------------------------------------

def _is_ids(value) -> bool:
    return isinstance(value, list) and bool(value) and all(type(v) is int and -(2**31) <= v < 2**31 for v in value)


def _inputs(value) -> dict:
    """EmbedRequest fields for OpenAI's input: a string, a list of strings (an empty string embeds as one
    empty input, as Ollama does), a list of token ids (one input), or a list of such lists."""
    if isinstance(value, str):
        return {"input": [value]}
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return {"input": value}
    if _is_ids(value):
        return {"input_tokens": [pb.TokenIds(ids=value)]}
    if isinstance(value, list) and value and all(_is_ids(v) for v in value):
        return {"input_tokens": [pb.TokenIds(ids=v) for v in value]}
    raise HTTPError(400, "invalid input: a string, a list of strings, a list of token ids or a list of those")


@bp.route("/v1/embeddings", methods=["POST"])
def embeddings():
    body = _body()
    encoding = b.get_str(body, "encoding_format") or "float"
    if encoding.lower() not in ("float", "base64"):
        raise HTTPError(400, f"Invalid value for 'encoding_format' = {encoding}. Supported values: "
                             "['float', 'base64'].")
    model = b.get_str(body, "model")
    req = pb.EmbedRequest(model=model, dimensions=b.get_int(body, "dimensions"), **_inputs(body.get("input")))
    data, count = [], 0
    for message in stub().Embed(req):
        for e in message.embeddings:
            if encoding.lower() == "base64":
                vector: object = base64.b64encode(np.asarray(e.values, dtype="<f4").tobytes()).decode()
            else:
                vector = list(e.values)
            data.append({"object": "embedding", "embedding": vector, "index": len(data)})
        count = message.metrics.prompt_eval_count or count
    return _json({"object": "list", "data": data, "model": model,
                  "usage": {"prompt_tokens": count, "total_tokens": count}})


# -- models -------------------------------------------------------------------------------------------

def _model(name: str, modified) -> dict:
    return {"id": name, "object": "model", "created": modified.seconds, "owned_by": parse_name(name).namespace}


@bp.route("/v1/models", methods=["GET"])
def models():
    listing = stub().List(pb.ListRequest())
    return _json({"object": "list", "data": [_model(m.name, m.modified_at) for m in listing.models]})


@bp.route("/v1/models/<path:model>", methods=["GET"])
def model(model: str):
    shown = stub().Show(pb.ShowRequest(model=model))
    return _json(_model(model, shown.modified_at))
