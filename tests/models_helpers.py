"""Helpers for tests that need a model in the store: upload a tiny GGUF as a blob and create from it.

Everything goes through the public API (gRPC here), so these helpers exercise the real paths too.
"""

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
