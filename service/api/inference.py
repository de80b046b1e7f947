"""The inference RPCs (Embed, Embeddings, ListRunning, Generate, Chat): protobuf in, engine, protobuf out.

Why only translation here: the servicer hands these RPCs to this class so that the engine
(service/engine/) stays free of protobuf and gRPC, and its tests can drive it directly. Each method
gets a cancel event from the call context (client gone or deadline passed) and passes it down, so the
runner stops generating or embedding instead of working for nobody.
"""

from __future__ import annotations

import numpy as np

from corral.protos.ollama.v1 import ollama_pb2 as pb
from corral.service.api import convert, limits
from corral.service.api.embed_stream import embed_stream
from corral.service.api.status import cancel_event, handle_errors
from corral.service.engine import textgen
from corral.service.engine.engine import Engine
from corral.store.errors import InvalidArgument

EMBED_MESSAGE_BYTES = 1 << 20  # vectors per EmbedResponse: about 1 MiB, far below gRPC's 4 MiB default


class Inference:
    """Implements the inference RPCs for OllamaServicer over one Engine (one scheduler per server)."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self.streams: set = set()  # the flow-control windows of the EmbedStreams in progress

    def close(self) -> None:
        self.engine.close()

    @handle_errors
    def Embed(self, request: pb.EmbedRequest, context):
        cancel = cancel_event(context)
        held = None  # one message is held back so the metrics ride on the last one
        if request.input_tokens and request.input:
            raise InvalidArgument("input and input_tokens cannot both be set")
        limits.check_embed(request)
        inputs = [list(t.ids) for t in request.input_tokens] or list(request.input)
        for item in self.engine.embed(
            request.model,
            inputs,
            truncate=request.truncate if request.HasField("truncate") else True,
            dimensions=request.dimensions,
            options=convert.options(request),
            keep_alive=convert.duration_to_seconds(request, "keep_alive"),
            cancel=cancel,
        ):
            if item.get("done"):
                last = held or convert.embed_response(request.model, len(inputs), [])
                last.metrics.CopyFrom(convert.metrics_message(item))
                yield last
                return
            vectors: np.ndarray = item["vectors"]
            step = max(1, EMBED_MESSAGE_BYTES // max(1, vectors.shape[1] * 4))
            for start in range(0, len(vectors), step):
                if held is not None:
                    yield held
                held = convert.embed_response(request.model, item["offset"] + start,
                                              vectors[start : start + step].tolist())

    @handle_errors
    def EmbedStream(self, request_iterator, context):
        yield from embed_stream(self.engine, limits.checked_embed_stream(request_iterator), cancel_event(context),
                                self.streams)

    def stream_stats(self) -> list[dict]:
        """Read, answered and peak unanswered items of each EmbedStream in progress."""
        return [window.stats() for window in list(self.streams)]

    @handle_errors
    def Embeddings(self, request: pb.EmbeddingsRequest, context):
        limits.check_embeddings(request)
        values = self.engine.embeddings(
            request.model,
            request.prompt,
            options=convert.options(request),
            keep_alive=convert.duration_to_seconds(request, "keep_alive"),
            cancel=cancel_event(context),
        )
        return pb.EmbeddingsResponse(embedding=values)

    @handle_errors
    def ListRunning(self, request, context):
        return pb.ListRunningResponse(models=[convert.running_model(row) for row in self.engine.running()])

    @handle_errors
    def Generate(self, request: pb.GenerateRequest, context):
        limits.check_generate(request)
        for item in textgen.generate(self.engine, convert.generate_request_dict(request), cancel_event(context)):
            yield convert.generate_response(request.model, item)

    @handle_errors
    def Chat(self, request: pb.ChatRequest, context):
        limits.check_chat(request)
        for item in textgen.chat(self.engine, convert.chat_request_dict(request), cancel_event(context)):
            yield convert.chat_response(request.model, item)
