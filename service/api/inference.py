"""The inference RPCs (Embed, Embeddings, ListRunning, Generate, Chat): protobuf in, engine, protobuf out.

Why only translation here: the servicer delegates these RPCs to this class so that the engine
(service/engine/) stays free of protobuf and gRPC, and its tests can drive it directly. Each method
gets a cancel event from the call context (client gone or deadline passed) and passes it down, so the
runner stops generating or embedding instead of working for nobody.
"""

from __future__ import annotations

import numpy as np

from corral.protos.ollama.v1 import ollama_pb2 as pb
from corral.service.engine import textgen
from corral.service.engine.engine import Engine
from corral.service.api.servicer import details_message
from corral.service.api.status import cancel_event, duration_to_seconds, handle_errors, struct_to_dict, timestamp

EMBED_MESSAGE_BYTES = 1 << 20  # vectors per EmbedResponse: about 1 MiB, far below gRPC's 4 MiB default


def _metrics(d: dict) -> pb.Metrics:
    return pb.Metrics(
        total_duration=d.get("total_duration", 0),
        load_duration=d.get("load_duration", 0),
        prompt_eval_count=d.get("prompt_eval_count", 0),
        prompt_eval_duration=d.get("prompt_eval_duration", 0),
        eval_count=d.get("eval_count", 0),
        eval_duration=d.get("eval_duration", 0),
    )


def _optional(request, field: str):
    return getattr(request, field) if request.HasField(field) else None


def _options(request):
    return struct_to_dict(request.options) if request.HasField("options") else None


def _message_dict(m: pb.Message) -> dict:
    out = {"role": m.role, "content": m.content}
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


class Inference:
    """Implements the inference RPCs for OllamaServicer over one Engine (one scheduler per server)."""

    def __init__(self, store, engine: Engine | None = None):
        self.store = store
        self.engine = engine or Engine(store)

    def close(self) -> None:
        self.engine.close()

    @handle_errors
    def Embed(self, request: pb.EmbedRequest, context):
        cancel = cancel_event(context)
        held = None  # one message is held back so the metrics ride on the last one
        for item in self.engine.embed(
            request.model,
            list(request.input),
            truncate=request.truncate if request.HasField("truncate") else True,
            dimensions=request.dimensions,
            options=_options(request),
            keep_alive=duration_to_seconds(request, "keep_alive"),
            cancel=cancel,
        ):
            if item.get("done"):
                last = held or pb.EmbedResponse(model=request.model, offset=len(request.input))
                last.metrics.CopyFrom(_metrics(item))
                yield last
                return
            vectors: np.ndarray = item["vectors"]
            step = max(1, EMBED_MESSAGE_BYTES // max(1, vectors.shape[1] * 4))
            for start in range(0, len(vectors), step):
                if held is not None:
                    yield held
                held = pb.EmbedResponse(
                    model=request.model,
                    offset=item["offset"] + start,
                    embeddings=[pb.Embedding(values=row) for row in vectors[start : start + step].tolist()],
                )

    @handle_errors
    def Embeddings(self, request: pb.EmbeddingsRequest, context):
        values = self.engine.embeddings(
            request.model,
            request.prompt,
            options=_options(request),
            keep_alive=duration_to_seconds(request, "keep_alive"),
            cancel=cancel_event(context),
        )
        return pb.EmbeddingsResponse(embedding=values)

    @handle_errors
    def ListRunning(self, request, context):
        return pb.ListRunningResponse(
            models=[
                pb.RunningModel(
                    name=row["name"],
                    model=row["model"],
                    size=row["size"],
                    digest=row["digest"],
                    details=details_message(row["details"]),
                    expires_at=timestamp(row["expires_at"]),
                    size_vram=row["size_vram"],
                    context_length=row["context_length"],
                )
                for row in self.engine.running()
            ]
        )

    @handle_errors
    def Generate(self, request: pb.GenerateRequest, context):
        req = {
            "model": request.model, "prompt": request.prompt, "suffix": request.suffix,
            "images": list(request.images), "system": _optional(request, "system"),
            "template": _optional(request, "template"), "context": list(request.context), "raw": request.raw,
            "format": request.format, "options": _options(request),
            "keep_alive": duration_to_seconds(request, "keep_alive"), "think": request.think,
            "truncate": _optional(request, "truncate"), "top_logprobs": request.top_logprobs,
        }
        for item in textgen.generate(self.engine, req, cancel_event(context)):
            out = pb.GenerateResponse(model=request.model, created_at=timestamp(), response=item["response"],
                                      done=item["done"])
            if item["done"]:
                out.done_reason = item["done_reason"]
                out.context.extend(item.get("context") or [])
                out.metrics.CopyFrom(_metrics(item))
            yield out

    @handle_errors
    def Chat(self, request: pb.ChatRequest, context):
        req = {
            "model": request.model, "messages": [_message_dict(m) for m in request.messages],
            "tools": [struct_to_dict(t) for t in request.tools], "format": request.format,
            "options": _options(request), "keep_alive": duration_to_seconds(request, "keep_alive"),
            "think": request.think, "truncate": _optional(request, "truncate"),
            "top_logprobs": request.top_logprobs,
        }
        for item in textgen.chat(self.engine, req, cancel_event(context)):
            out = pb.ChatResponse(model=request.model, created_at=timestamp(), done=item["done"],
                                  message=pb.Message(role="assistant", content=item["content"]))
            if item["done"]:
                out.done_reason = item["done_reason"]
                out.metrics.CopyFrom(_metrics(item))
            yield out
