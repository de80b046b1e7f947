"""`corral create NAME -f Modelfile`: the Ollama CLI's create flow, as a gRPC client of a running server.

The Modelfile is parsed here with the same parser the server uses for the legacy `modelfile` field
(store/modelfile.py); files it names (FROM ./model.gguf, ADAPTER ./lora.gguf, a safetensors folder) are
uploaded as blobs first, then one Create call streams the server's progress lines.
"""

import sys
from pathlib import Path

import grpc

from corral.protos.ollama.v1 import ollama_pb2 as pb
from corral.service.cli.client import EXIT_INTERRUPTED, Client, error_message, print_error
from corral.store.digests import file_digest
from corral.store.errors import CorralError
from corral.store.modelfile import modelfile_to_create, parse_modelfile

CHUNK = 1024 * 1024


def _uploader(stub):
    def upload(path: Path) -> str:
        digest = file_digest(path)

        def messages():
            yield pb.PushBlobRequest(digest=digest)
            with open(path, "rb") as f:
                while chunk := f.read(CHUNK):
                    yield pb.PushBlobRequest(data=chunk)

        try:
            stub.BlobExists(pb.BlobExistsRequest(digest=digest))
        except grpc.RpcError as err:
            if err.code() != grpc.StatusCode.NOT_FOUND:
                raise
            print(f"uploading {path.name}", file=sys.stderr)
            stub.PushBlob(messages())
        return digest

    return upload


def build_request(stub, name: str, modelfile: Path, quantize: str = "") -> pb.CreateRequest:
    fields = modelfile_to_create(parse_modelfile(modelfile.read_bytes()), base_dir=modelfile.parent,
                                 import_file=_uploader(stub))
    req = pb.CreateRequest(model=name, quantize=quantize, license=fields.get("license", []))
    setattr(req, "from", fields.get("from", ""))
    req.files.update(fields.get("files", {}))
    req.adapters.update(fields.get("adapters", {}))
    for key in ("template", "system"):
        if key in fields:
            setattr(req, key, fields[key])
    if fields.get("parameters"):
        from corral.service.api.convert import dict_to_struct

        req.parameters.CopyFrom(dict_to_struct(fields["parameters"]))
    for m in fields.get("messages", []):
        req.messages.add(role=m["role"], content=m["content"])
    return req


def run_create(target: str, name: str, modelfile: Path, quantize: str = "") -> int:
    with Client(target) as client:
        try:
            req = build_request(client.stub, name, modelfile, quantize)
            for line in client.stub.Create(req):
                extra = f" {line.completed}/{line.total}" if line.total else ""
                print(line.status + extra)
        except KeyboardInterrupt:
            return EXIT_INTERRUPTED
        except (CorralError, grpc.RpcError, OSError) as err:
            print_error(error_message(err, target))
            return 1
    return 0
