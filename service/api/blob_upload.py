"""PushBlob's messages, read without copying their data.

Why: an upload is a stream of ~1 MiB PushBlobRequest messages, and the generated code parses each into a
protobuf message (one copy of the data) whose `data` attribute is another copy. At disk speed those two
copies per MiB were a fifth of the server's CPU on two cores. The server registers PushBlob with
`parse_push_blob` as its request deserializer instead: it reads the message's two fields straight from
the received bytes, `data` as a read-only view of them, which the blob store hashes and writes as is.
The servicer sees the same attributes (`digest`, `data`) either way.

Memory stays bounded however many uploads arrive at once: an upload larger than SMALL_UPLOAD waits for
one of UPLOAD_SLOTS before reading on (the disk is shared, so more writers would not be faster), holding
at most SMALL_UPLOAD of data; gRPC's flow control holds its sender back meanwhile. A written upload holds
a few 1 MiB buffers (store/blobs.py). Small blobs (templates, params) never wait behind large ones.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import NamedTuple

import grpc

SMALL_UPLOAD = 1 << 20
UPLOAD_SLOTS = threading.BoundedSemaphore(2)  # large uploads written at once, per process

PUSH_BLOB = "/ollama.v1.Ollama/PushBlob"
SERVICE = "ollama.v1.Ollama"


class PushBlobChunk(NamedTuple):
    """A parsed PushBlobRequest: `digest` (field 1) and `data` (field 2, a view of the message bytes)."""

    digest: str
    data: memoryview


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise ValueError("truncated or overlong varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


def parse_push_blob(raw: bytes) -> PushBlobChunk:
    """PushBlobRequest wire bytes -> PushBlobChunk; unknown fields are skipped, a repeated field's last
    value wins (protobuf's rules); ValueError for malformed bytes."""
    view = memoryview(raw)
    digest, data = "", view[:0]
    pos, end = 0, len(raw)
    while pos < end:
        key, pos = _varint(raw, pos)
        number, wire = key >> 3, key & 7
        if wire == 2:
            size, pos = _varint(raw, pos)
            if pos + size > end:
                raise ValueError("truncated field")
            if number == 1:
                digest = str(raw[pos:pos + size], "utf-8")
            elif number == 2:
                data = view[pos:pos + size]
            pos += size
        elif wire == 0:
            _, pos = _varint(raw, pos)
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
        if number == 0 or pos > end:
            raise ValueError("malformed message")
    return PushBlobChunk(digest, data)


@contextmanager
def upload(first, messages: Iterator) -> Iterator[tuple[Iterable, bool]]:
    """(the upload's data chunks, whether it is large) for the first message and the rest of a PushBlob
    call; a large one holds an upload slot for as long as the context lasts."""
    head, size = [first.data], len(first.data)
    for message in messages:
        head.append(message.data)
        size += len(message.data)
        if size > SMALL_UPLOAD:
            break
    else:
        yield head, False
        return
    with UPLOAD_SLOTS:
        yield itertools.chain(head, (m.data for m in messages)), True


class RawPushBlob:
    """Stands in for a grpc.Server while the generated add_OllamaServicer_to_server registers its handlers,
    and registers them with PushBlob's request deserializer replaced by parse_push_blob."""

    def __init__(self, server: grpc.Server):
        self.server = server

    @staticmethod
    def _raw(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        return handler._replace(request_deserializer=parse_push_blob)  # type: ignore[attr-defined]

    def add_registered_method_handlers(self, service: str, handlers: dict) -> None:
        if service == SERVICE and "PushBlob" in handlers:
            handlers = {**handlers, "PushBlob": self._raw(handlers["PushBlob"])}
        self.server.add_registered_method_handlers(service, handlers)  # type: ignore[attr-defined]

    def add_generic_rpc_handlers(self, generic_handlers) -> None:
        self.server.add_generic_rpc_handlers(tuple(_RawGeneric(h, self._raw) for h in generic_handlers))


class _RawGeneric(grpc.GenericRpcHandler):
    def __init__(self, inner: grpc.GenericRpcHandler, raw):
        self.inner, self.raw = inner, raw

    def service(self, handler_call_details):
        handler = self.inner.service(handler_call_details)
        if handler is not None and handler_call_details.method == PUSH_BLOB:
            return self.raw(handler)
        return handler
