"""Helpers for tests that need a model in the store: upload a tiny GGUF as a blob and create from it.

Everything goes through the public API (gRPC here), so these helpers exercise the real paths too.
"""

import hashlib
from pathlib import Path

from protos.ollama.v1 import ollama_pb2 as pb
from tests.gguf_models import write_bert_gguf, write_llama_gguf


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def upload(stub, path: Path) -> str:
    digest = sha256_file(path)
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
