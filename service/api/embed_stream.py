"""The EmbedStream rpc: a bidirectional stream of items to embed, with flow control.

Why a module of its own: the rpc needs a reader thread (gRPC's sync server hands the handler an
iterator of requests and takes an iterator of responses, so reading and answering must happen on two
threads) and a window that couples them; the proto comment of the rpc is the contract.

Flow: the handler reads the first message (config, maybe items) and opens the engine's EmbedStream
(which leases the model once for the whole stream), then a reader thread reads further messages while
fewer than `window` items are unanswered and adds their texts; the handler's thread turns each chunk of
results into one response message. An item counts as answered once its response message was handed to
gRPC, which blocks while the client does not read: then the window fills, the reader stops reading, and
gRPC's flow control stops the client's sending.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator

import grpc

from corral.protos.ollama.v1 import ollama_pb2 as pb
from corral.service.api import convert
from corral.store.errors import Cancelled, InvalidArgument

DEFAULT_WINDOW = 256
MAX_WINDOW = 4096


class Window:
    """Unanswered items of one stream: read (added) minus answered; the reader waits for room."""

    def __init__(self, size: int):
        self.size = size
        self.read = 0
        self.answered = 0
        self.peak = 0  # the most items ever unanswered (tests check the bound)
        self._cond = threading.Condition()
        self._closed = False

    @property
    def unanswered(self) -> int:
        return self.read - self.answered

    def wait_for_room(self) -> bool:
        """Blocks while `size` items or more are unanswered; False once the stream has ended."""
        with self._cond:
            while not self._closed and self.read - self.answered >= self.size:
                self._cond.wait()
            return not self._closed

    def took(self, n: int) -> None:
        with self._cond:
            self.read += n
            self.peak = max(self.peak, self.read - self.answered)

    def answer(self, n: int) -> None:
        with self._cond:
            self.answered += n
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def stats(self) -> dict:
        with self._cond:
            return {"window": self.size, "read": self.read, "answered": self.answered,
                    "unanswered": self.read - self.answered, "peak": self.peak}


def config_window(config: pb.EmbedStreamConfig) -> int:
    if config.window < 0 or config.window > MAX_WINDOW:
        raise InvalidArgument(f"window must be between 0 and {MAX_WINDOW}")
    return config.window or DEFAULT_WINDOW


def embed_stream(engine, requests: Iterator[pb.EmbedStreamRequest], cancel: threading.Event,
                 windows: set) -> Iterator[pb.EmbedStreamResponse]:
    """The rpc's body (errors are turned into statuses by the caller's handle_errors). `windows` is the
    set of live streams' windows, for diagnostics and tests.

    A call that gRPC itself ended must not end here with a status: when request bytes do not parse,
    gRPC sends INTERNAL "Exception deserializing request!" and the request iterator simply ends. A
    handler that then returns (or raises) makes gRPC's sync server start a second status; once the
    first has completed, the second never does, the call stays open in gRPC's core, and server.stop()
    waits for it forever (seen in about one call of ten; found by tests/fuzz/test_grpc_props.py). A
    response yielded to an ended call is dropped and ends the handler without a status, so that is what
    happens once cancel.call_active() (status.CallEvent) turns false.
    """
    active = getattr(cancel, "call_active", None)
    try:
        yield from _embed_stream(engine, requests, cancel, windows)
    except Exception:
        if active is None or active():
            raise
        yield pb.EmbedStreamResponse()
        return
    if active is not None and not active():
        yield pb.EmbedStreamResponse()


def _embed_stream(engine, requests: Iterator[pb.EmbedStreamRequest], cancel: threading.Event,
                  windows: set) -> Iterator[pb.EmbedStreamResponse]:
    first = next(requests, None)
    if first is None:
        return  # the client closed without sending anything (or gRPC ended the call): nothing to answer
    if not first.HasField("config"):
        raise InvalidArgument("the first EmbedStream message must carry config")
    config = first.config
    window = Window(config_window(config))
    stream = engine.embed_stream(
        config.model,
        truncate=config.truncate if config.HasField("truncate") else True,
        dimensions=config.dimensions,
        options=convert.options(config),
        keep_alive=convert.duration_to_seconds(config, "keep_alive"),
    )
    ids: deque[str] = deque()  # ids of the items read and not yet answered, in order

    def take(message: pb.EmbedStreamRequest) -> None:
        items = message.items
        if len(items) > window.size:
            raise InvalidArgument(f"a message may carry at most {window.size} items (the window)")
        if items:
            ids.extend(item.id for item in items)
            window.took(len(items))
            stream.add([item.text for item in items])

    def read() -> None:
        try:
            take(first)
            while window.wait_for_room():
                message = next(requests, None)
                if message is None:
                    stream.finish()
                    return
                if message.HasField("config"):
                    raise InvalidArgument("only the first EmbedStream message may carry config")
                take(message)
        except grpc.RpcError:
            stream.fail(Cancelled("request canceled"))  # the call ended under the reader (client gone)
        except Exception as exc:
            stream.fail(exc)

    reader = threading.Thread(target=read, name="embed-stream-reader", daemon=True)
    windows.add(window)
    try:
        reader.start()
        for item in stream.results(cancel):
            if item.get("done"):
                yield pb.EmbedStreamResponse(metrics=convert.metrics_message(item))
                return
            yield pb.EmbedStreamResponse(results=results(item, ids))
            window.answer(len(item["vectors"]))
    finally:
        window.close()
        stream.close()
        windows.discard(window)


def results(item: dict, ids: deque[str]) -> list[pb.EmbedResult]:
    """One chunk of the engine's stream results as EmbedResult messages (ids taken from the left)."""
    first, errors = item["first"], item["errors"]
    out = []
    for row, values in enumerate(item["vectors"].tolist()):
        if row in errors:
            out.append(pb.EmbedResult(id=ids.popleft(), index=first + row, error=errors[row]))
        else:
            out.append(pb.EmbedResult(id=ids.popleft(), index=first + row, values=values))
    return out
