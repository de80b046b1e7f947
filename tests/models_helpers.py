"""Helpers for tests that need a model in the store: upload a tiny GGUF as a blob and create from it.

Everything goes through the public API (gRPC here), so these helpers exercise the real paths too.
"""

import threading
from pathlib import Path

from corral.protos.ollama.v1 import ollama_pb2 as pb
from corral.store.digests import file_digest
from tests.gguf_models import write_bert_gguf, write_llama_gguf


def upload(stub, path: Path) -> str:
    digest = file_digest(path)
    data = path.read_bytes()

    def messages():
        yield pb.PushBlobRequest(digest=digest)
        for i in range(0, len(data), 1 << 16):
            yield pb.PushBlobRequest(data=data[i : i + (1 << 16)])

    stub.PushBlob(messages())
    return digest


def create_from_gguf(stub, tmp_path: Path, name: str, kind: str = "llama", **create_fields) -> list:
    """Writes a tiny GGUF, uploads it and creates `name` from it; returns the progress statuses."""
    path = tmp_path / f"{kind}-{name.replace('/', '_').replace(':', '_')}.gguf"
    if not path.exists():
        (write_bert_gguf if kind == "bert" else write_llama_gguf)(path)
    digest = upload(stub, path)
    req = pb.CreateRequest(model=name, **create_fields)
    req.files["model.gguf"] = digest
    return [p.status for p in stub.Create(req)]


def hold_uploads(stub, servicer, count, monkeypatch):
    """`count` PushBlob calls on `stub` that stay open in the service (each holds its stream and a server
    slot) until the returned event is set; returns once all of them reached the service."""
    import grpc
    import pytest

    release, arrived = threading.Event(), threading.Semaphore(0)
    real_intact = servicer.store.blobs.intact

    def intact(*args, **kwargs):  # PushBlob asks first: the call's first message arrived, the call is in
        arrived.release()
        return real_intact(*args, **kwargs)

    monkeypatch.setattr(servicer.store.blobs, "intact", intact)

    def messages():
        yield pb.PushBlobRequest(digest="sha256:" + "a" * 64)
        release.wait(30)

    threads = [threading.Thread(target=lambda: pytest.raises(grpc.RpcError, stub.PushBlob, messages()))
               for _ in range(count)]
    for t in threads:
        t.start()
    for _ in range(count):
        assert arrived.acquire(timeout=10)
    return release, threads
