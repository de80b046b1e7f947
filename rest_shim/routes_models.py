"""Model management routes: /, version, tags, show, copy, delete, blobs and create.

Why tags and show are rendered through a memo: clients poll them (a UI lists the models every few
seconds, shows each), and the service answers with the same bytes while nothing changed. The JSON body
is a pure function of those bytes, so it is rendered once per distinct response and kept in a small memo
keyed by the bytes themselves: a repeat costs the gRPC call and a dictionary lookup, never a stale answer.
"""

import contextlib
import threading
from collections import OrderedDict
from collections.abc import Callable

from flask import Blueprint, Response, request

from corral.protos.ollama.v1 import ollama_pb2 as pb
from corral.rest_shim import body as b
from corral.rest_shim import translate
from corral.rest_shim.client import client, stub
from corral.rest_shim.errors import HTTPError
from corral.rest_shim.jsonenc import dumpb
from corral.rest_shim.streaming import json_bytes_response, json_response, ndjson
from corral.store.prefetch import Prefetch

bp = Blueprint("models", __name__)


class RenderMemo:
    """JSON bodies rendered from gRPC response bytes, least recently used dropped first."""

    def __init__(self, entries: int, max_bytes: int = 4 << 20):
        self.entries, self.max_bytes = entries, max_bytes
        self.items: OrderedDict[bytes, bytes] = OrderedDict()
        self.lock = threading.Lock()

    def render(self, raw: bytes, render: Callable[[bytes], bytes]) -> bytes:
        if len(raw) > self.max_bytes:  # a verbose show of a big vocabulary: not worth keeping
            return render(raw)
        with self.lock:
            body = self.items.get(raw)
            if body is not None:
                self.items.move_to_end(raw)
                return body
        body = render(raw)
        with self.lock:
            self.items[raw] = body
            while len(self.items) > self.entries:
                self.items.popitem(last=False)
        return body


_tags_memo = RenderMemo(entries=4)  # the listing changes as a whole
_show_memo = RenderMemo(entries=64, max_bytes=1 << 20)

# Upload chunk: big enough to keep per-message overhead small, far below gRPC's message limit.
BLOB_CHUNK = 1024 * 1024
# Uploads above one chunk read and sent at once, per process: each holds a few chunks, so 64 concurrent
# uploads must not all read ahead (the service takes that many at once too, service/api/blob_upload.py).
_UPLOADS = threading.BoundedSemaphore(2)


@bp.route("/", methods=["GET", "HEAD"])
def root():
    return Response("Ollama is running", content_type="text/plain; charset=utf-8")


@bp.route("/api/version", methods=["GET", "HEAD"])
def version():
    return json_response({"version": client().Version()})


def _tags_json(raw: bytes) -> bytes:
    listed = pb.ListResponse.FromString(raw)
    return dumpb(
        {
            "models": [
                {
                    "name": m.name,
                    "model": m.model,
                    "modified_at": translate.rfc3339(m.modified_at),
                    "size": m.size,
                    "digest": m.digest,
                    "details": translate.details(m.details),
                }
                for m in listed.models
            ]
        }
    )


@bp.route("/api/tags", methods=["GET", "HEAD"])
def tags():
    return json_bytes_response(_tags_memo.render(client().raw.List(pb.ListRequest()), _tags_json))


@bp.route("/api/show", methods=["POST"])
def show():
    body = b.json_body("ShowRequest")
    name = b.model_name(body)
    if not name:
        raise HTTPError(400, "model is required")
    req = pb.ShowRequest(model=name, verbose=bool(b.get_bool(body, "verbose", False)))
    if body.get("system") is not None:
        req.system = b.get_str(body, "system")
    opts = b.options(body)
    if opts is not None:
        req.options.CopyFrom(opts)
    raw = client().raw.Show(req)
    return json_bytes_response(_show_memo.render(raw, _show_json))


def _show_json(raw: bytes) -> bytes:
    r = pb.ShowResponse.FromString(raw)
    out: dict = {}
    for key in ("license", "modelfile", "parameters", "template", "system"):
        if getattr(r, key):
            out[key] = getattr(r, key)
    out["details"] = translate.details(r.details)
    if r.messages:
        out["messages"] = [translate.message(m) for m in r.messages]
    out["model_info"] = translate.struct_to_dict(r.model_info)
    if r.HasField("projector_info"):
        out["projector_info"] = translate.struct_to_dict(r.projector_info)
    out["tensors"] = [{"name": t.name, "type": t.type, "shape": list(t.shape)} for t in r.tensors]
    if r.capabilities:
        out["capabilities"] = list(r.capabilities)
    out["modified_at"] = translate.rfc3339(r.modified_at)
    return dumpb(out)


@bp.route("/api/copy", methods=["POST"])
def copy():
    body = b.json_body("CopyRequest")
    stub().Copy(pb.CopyRequest(source=b.get_str(body, "source"), destination=b.get_str(body, "destination")))
    return Response(status=200)


@bp.route("/api/delete", methods=["DELETE"])
def delete():
    body = b.json_body("DeleteRequest")
    name = b.model_name(body)
    if not name:
        raise HTTPError(400, "model is required")
    stub().Delete(pb.DeleteRequest(model=name))
    return Response(status=200)


@bp.route("/api/blobs/<digest>", methods=["HEAD"])
def blob_exists(digest):
    stub().BlobExists(pb.BlobExistsRequest(digest=digest))
    return Response(status=200)


def _read_full(stream, size: int) -> bytes:
    """Up to `size` bytes (fewer only at the end): small gRPC messages cost throughput (Python gRPC moves
    64 KiB messages at less than half the rate of 1 MiB ones)."""
    first = stream.read(size)
    if len(first) == size or not first:
        return first
    parts, got = [first], len(first)
    while got < size:
        part = stream.read(size - got)
        if not part:
            break
        parts.append(part)
        got += len(part)
    return b"".join(parts)


class _BodyReader:
    """Reads the request body on its own thread, up to two 1 MiB chunks ahead, so that receiving the
    upload and sending it on over gRPC overlap. stop() ends the thread and reads (and drops) the rest of
    the body: a client still sending its upload when the service answers early (the blob is already
    stored) must see our answer, not a connection reset."""

    def __init__(self, source):
        self.source = source
        self.ahead = Prefetch(iter(lambda: _read_full(source, BLOB_CHUNK), b""), name="blob-body")

    def chunks(self):
        return iter(self.ahead)

    def stop(self) -> None:
        self.ahead.close()
        self.ahead.join()
        try:
            while self.source.read(BLOB_CHUNK):
                pass
        except Exception:
            pass


def _varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


@bp.route("/api/blobs/<digest>", methods=["POST"])
def push_blob(digest):
    """Streams the raw body to the service in 1 MiB PushBlobRequest messages, serialized here (field 1
    `digest` in the first, field 2 `data` in the rest: one copy of the data, where building and serializing
    a message makes two); a 4 GiB upload is never held in memory."""
    large = request.content_length is None or request.content_length > BLOB_CHUNK
    with _UPLOADS if large else contextlib.nullcontext():
        body = _BodyReader(request.input_stream)  # the WSGI input itself: reads of 1 MiB, no wrapper
        digest_bytes = digest.encode()

        def messages():
            yield b"\x0a" + _varint(len(digest_bytes)) + digest_bytes
            for chunk in body.chunks():
                yield b"\x12" + _varint(len(chunk)) + chunk

        try:
            reply = client().raw.PushBlob(messages())
        finally:
            body.stop()
    return Response(status=201 if reply.created else 200)


@bp.route("/api/create", methods=["POST"])
def create():
    body = b.json_body("CreateRequest")
    req = pb.CreateRequest(
        model=b.model_name(body),
        quantize=b.get_str(body, "quantize") or b.get_str(body, "quantization"),
        modelfile=b.get_str(body, "modelfile"),
        path=b.get_str(body, "path"),
        insecure=bool(b.get_bool(body, "insecure", False)),
        license=b.get_str_list(body, "license"),
    )
    setattr(req, "from", b.get_str(body, "from"))
    req.files.update(b.get_str_map(body, "files"))
    req.adapters.update(b.get_str_map(body, "adapters"))
    for key in ("template", "system"):
        if body.get(key) is not None:
            setattr(req, key, b.get_str(body, key))
    params = b.get_dict(body, "parameters")
    if params is not None:
        req.parameters.CopyFrom(b.to_struct(params))
    for m in b.get_list(body, "messages"):
        if not isinstance(m, dict):
            raise HTTPError(400, "json: cannot unmarshal into Go struct field CreateRequest.messages")
        req.messages.add(role=str(m.get("role", "")), content=str(m.get("content", "")))
    return ndjson(stub().Create(req), translate.progress, stream=b.stream_flag(body))
