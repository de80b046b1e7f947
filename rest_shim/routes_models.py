"""Model management routes: /, version, tags, show, copy, delete, blobs and create."""

import threading

from flask import Blueprint, Response, request

from corral.protos.ollama.v1 import ollama_pb2 as pb
from corral.rest_shim import body as b
from corral.rest_shim import translate
from corral.rest_shim.client import stub
from corral.rest_shim.errors import HTTPError
from corral.rest_shim.streaming import json_response, ndjson

bp = Blueprint("models", __name__)

# Upload chunk: big enough to keep per-message overhead small, far below gRPC's message limit.
BLOB_CHUNK = 1024 * 1024


@bp.route("/", methods=["GET", "HEAD"])
def root():
    return Response("Ollama is running", content_type="text/plain; charset=utf-8")


@bp.route("/api/version", methods=["GET", "HEAD"])
def version():
    return json_response({"version": stub().Version(pb.VersionRequest()).version})


@bp.route("/api/tags", methods=["GET", "HEAD"])
def tags():
    listed = stub().List(pb.ListRequest())
    return json_response(
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
    r = stub().Show(req)
    out = {}
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
    return json_response(out)


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
    """Up to `size` bytes: socket reads return a few KiB at a time, and small gRPC messages cost
    throughput (Python gRPC moves 64 KiB messages at less than half the rate of 1 MiB ones)."""
    parts, got = [], 0
    while got < size:
        part = stream.read(size - got)
        if not part:
            break
        parts.append(part)
        got += len(part)
    return parts[0] if len(parts) == 1 else b"".join(parts)


@bp.route("/api/blobs/<digest>", methods=["POST"])
def push_blob(digest):
    """Streams the raw body to the service in chunks; a 4 GiB upload is never held in memory.

    When the service answers before the body is consumed (the blob is already stored), the rest of the
    body is read and dropped before answering: an HTTP/1.1 client still sending its upload would
    otherwise see the connection reset instead of our 200. A lock keeps the gRPC sender thread and this
    drain from reading the body at the same time.
    """
    source, lock, state = request.stream, threading.Lock(), {"done": False}

    def messages():
        yield pb.PushBlobRequest(digest=digest)
        while True:
            with lock:
                chunk = b"" if state["done"] else _read_full(source, BLOB_CHUNK)
            if not chunk:
                return
            yield pb.PushBlobRequest(data=chunk)

    try:
        reply = stub().PushBlob(messages())
    finally:
        with lock:
            state["done"] = True
            while source.read(BLOB_CHUNK):
                pass
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
