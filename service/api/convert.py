"""Every protobuf <-> dict conversion of the service, in one place.

Why one module: the store, the engine, model creation and the registry client speak plain dicts (Ollama's
JSON shapes); the servicer and the inference and transfer handlers only call these functions, so a field
is converted one way wherever it appears (a chat message is the same dict in chat and in create).
"""

from __future__ import annotations

import time

from google.protobuf import duration_pb2, timestamp_pb2

from corral.protos.ollama.v1 import ollama_pb2 as pb
from corral.protos.structs import dict_to_struct, struct_to_dict

# -- well-known types ---------------------------------------------------------------------------------


def duration_to_seconds(message, field: str = "keep_alive") -> float | None:
    """Seconds of an optional Duration field: None when unset, negative meaning 'forever'."""
    if not message.HasField(field):
        return None
    d: duration_pb2.Duration = getattr(message, field)
    return d.seconds + d.nanos / 1e9


def timestamp(epoch_seconds: float | None = None) -> timestamp_pb2.Timestamp:
    """A Timestamp for an epoch time (now when None), keeping nanoseconds."""
    ts = timestamp_pb2.Timestamp()
    ns = time.time_ns() if epoch_seconds is None else round(epoch_seconds * 1e9)
    ts.seconds, ts.nanos = divmod(ns, 1_000_000_000)
    return ts


def optional(request, field: str):
    """An optional scalar field's value, None when unset."""
    return getattr(request, field) if request.HasField(field) else None


def options(request) -> dict | None:
    """A request's `options` Struct as a dict, None when unset."""
    return struct_to_dict(request.options) if request.HasField("options") else None


# -- messages shared by several RPCs -----------------------------------------------------------------


def message_dict(m: pb.Message) -> dict:
    """A chat message as Ollama's JSON object: role and content, then every other field that is set."""
    out: dict = {"role": m.role, "content": m.content}
    if m.images:
        out["images"] = list(m.images)
    if m.thinking:
        out["thinking"] = m.thinking
    if m.tool_calls:
        out["tool_calls"] = [struct_to_dict(t) for t in m.tool_calls]
    if m.tool_name:
        out["tool_name"] = m.tool_name
    if m.tool_call_id:
        out["tool_call_id"] = m.tool_call_id
    return out


def message_proto(m: dict) -> pb.Message:
    """A message of a response (chat's reply, show's seeded messages): role and content; chat_response
    adds the reply's thinking and tool_calls (service/api/unused_fields.py lists what none carries)."""
    return pb.Message(role=m["role"], content=m["content"])


def details_message(details: dict) -> pb.ModelDetails:
    return pb.ModelDetails(
        parent_model=details.get("parent_model") or "",
        format=details.get("format") or "",
        family=details.get("family") or "",
        families=details.get("families") or [],
        parameter_size=details.get("parameter_size") or "",
        quantization_level=details.get("quantization_level") or "",
    )


def progress_message(line: dict) -> pb.ProgressResponse:
    """A progress dict of create, pull or push -> ProgressResponse."""
    return pb.ProgressResponse(
        status=line.get("status", ""),
        digest=line.get("digest", ""),
        total=int(line.get("total") or 0),
        completed=int(line.get("completed") or 0),
    )


def metrics_message(d: dict) -> pb.Metrics:
    return pb.Metrics(
        total_duration=d.get("total_duration", 0),
        load_duration=d.get("load_duration", 0),
        prompt_eval_count=d.get("prompt_eval_count", 0),
        prompt_eval_duration=d.get("prompt_eval_duration", 0),
        eval_count=d.get("eval_count", 0),
        eval_duration=d.get("eval_duration", 0),
    )


# -- model management ---------------------------------------------------------------------------------


def model_summary(m: dict) -> pb.ModelSummary:
    """An /api/tags entry of ModelStore.list_models."""
    return pb.ModelSummary(
        name=m["name"],
        model=m["model"],
        modified_at=timestamp(m["modified_at"]),
        size=m["size"],
        digest=m["digest"],
        details=details_message(m["details"]),
    )


def show_response(shown: dict) -> pb.ShowResponse:
    """The dict of service.show -> ShowResponse."""
    response = pb.ShowResponse(
        license=shown.get("license") or "",
        modelfile=shown.get("modelfile") or "",
        parameters=shown.get("parameters") or "",
        template=shown.get("template") or "",
        system=shown.get("system") or "",
        details=details_message(shown.get("details") or {}),
        messages=[message_proto(m) for m in shown.get("messages") or []],
        model_info=dict_to_struct(shown.get("model_info") or {}),
        tensors=[pb.Tensor(name=t["name"], type=t["type"], shape=t["shape"]) for t in shown.get("tensors") or []],
        capabilities=shown.get("capabilities") or [],
        modified_at=timestamp(shown["modified_at"]),
    )
    if shown.get("projector_info"):
        response.projector_info.CopyFrom(dict_to_struct(shown["projector_info"]))
    return response


def create_request_dict(request: pb.CreateRequest) -> dict:
    """CreateRequest -> the Ollama JSON create request the Creator understands (unset fields absent)."""
    req: dict = {"model": request.model}
    for key in ("from", "quantize", "modelfile", "path", "insecure"):
        if getattr(request, key):
            req[key] = getattr(request, key)
    if request.files:
        req["files"] = dict(request.files)
    if request.adapters:
        req["adapters"] = dict(request.adapters)
    for key in ("template", "system"):
        if request.HasField(key):
            req[key] = getattr(request, key)
    if request.license:
        req["license"] = list(request.license)
    if request.HasField("parameters"):
        req["parameters"] = struct_to_dict(request.parameters)
    if request.messages:
        req["messages"] = [message_dict(m) for m in request.messages]
    return req


# -- inference ----------------------------------------------------------------------------------------


def generate_request_dict(request: pb.GenerateRequest) -> dict:
    """GenerateRequest -> the dict service/engine/textgen.py takes (system/template None when unset)."""
    return {
        "model": request.model, "prompt": request.prompt, "suffix": request.suffix,
        "images": list(request.images), "system": optional(request, "system"),
        "template": optional(request, "template"), "context": list(request.context), "raw": request.raw,
        "format": request.format, "options": options(request),
        "keep_alive": duration_to_seconds(request, "keep_alive"), "think": request.think,
        "truncate": optional(request, "truncate"), "shift": optional(request, "shift"),
        "logprobs": request.logprobs, "top_logprobs": request.top_logprobs,
    }


def chat_request_dict(request: pb.ChatRequest) -> dict:
    """ChatRequest -> the dict service/engine/textgen.py takes."""
    return {
        "model": request.model, "messages": [message_dict(m) for m in request.messages],
        "tools": [struct_to_dict(t) for t in request.tools], "format": request.format,
        "options": options(request), "keep_alive": duration_to_seconds(request, "keep_alive"),
        "think": request.think, "truncate": optional(request, "truncate"), "shift": optional(request, "shift"),
        "logprobs": request.logprobs, "top_logprobs": request.top_logprobs,
    }


def logprob_messages(entries) -> list[pb.Logprob]:
    """The runner's logprob entries ({"token", "logprob", "bytes", "top_logprobs"?}) as protobuf."""
    return [pb.Logprob(token=e["token"], logprob=e["logprob"], token_bytes=e["bytes"],
                       top_logprobs=[pb.TokenLogprob(token=t["token"], logprob=t["logprob"], token_bytes=t["bytes"])
                                     for t in e.get("top_logprobs") or ()])
            for e in entries]


def generate_response(model: str, item: dict) -> pb.GenerateResponse:
    """One streamed generate dict ({"response", "done"}, maybe "thinking" and "logprobs"; the last with
    done_reason, context, metrics)."""
    out = pb.GenerateResponse(model=model, created_at=timestamp(), response=item["response"], done=item["done"],
                              thinking=item.get("thinking") or "",
                              logprobs=logprob_messages(item.get("logprobs") or ()))
    if item["done"]:
        out.done_reason = item["done_reason"]
        out.context.extend(item.get("context") or [])
        out.metrics.CopyFrom(metrics_message(item))
    return out


def chat_response(model: str, item: dict) -> pb.ChatResponse:
    """One streamed chat dict ({"content", "done"}, maybe "thinking", "tool_calls" and "logprobs"; the
    last with done_reason and metrics)."""
    message = message_proto({"role": "assistant", "content": item["content"]})
    message.thinking = item.get("thinking") or ""
    message.tool_calls.extend(dict_to_struct(call) for call in item.get("tool_calls") or ())
    out = pb.ChatResponse(model=model, created_at=timestamp(), done=item["done"], message=message,
                          logprobs=logprob_messages(item.get("logprobs") or ()))
    if item["done"]:
        out.done_reason = item["done_reason"]
        out.metrics.CopyFrom(metrics_message(item))
    return out


def embed_response(model: str, offset: int, rows: list[list[float]]) -> pb.EmbedResponse:
    return pb.EmbedResponse(model=model, offset=offset, embeddings=[pb.Embedding(values=row) for row in rows])


def running_model(row: dict) -> pb.RunningModel:
    """A /api/ps row of Engine.running."""
    return pb.RunningModel(
        name=row["name"],
        model=row["model"],
        size=row["size"],
        digest=row["digest"],
        details=details_message(row["details"]),
        expires_at=timestamp(row["expires_at"]),
        size_vram=row["size_vram"],
        context_length=row["context_length"],
    )
