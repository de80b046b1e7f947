"""Model-management RPCs over a real gRPC channel: success paths and every error code and text."""

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from corral.protos.ollama.v1 import ollama_pb2 as pb
from tests.gguf_models import write_llama_gguf
from tests.models_helpers import create_from_gguf, upload


def rpc_error(fn, *args):
    with pytest.raises(grpc.RpcError) as info:
        result = fn(*args)
        if hasattr(result, "__iter__") and not isinstance(result, (bytes, str)):
            list(result)
    return info.value.code(), info.value.details()


def test_version_health_and_reflection(server):
    assert server.stub.Version(pb.VersionRequest()).version
    health = health_pb2_grpc.HealthStub(server.channel)
    reply = health.Check(health_pb2.HealthCheckRequest(service="ollama.v1.Ollama"))
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    reflect = reflection_pb2_grpc.ServerReflectionStub(server.channel)
    answers = reflect.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    names = {s.name for a in answers for s in a.list_services_response.service}
    assert {"ollama.v1.Ollama", "grpc.health.v1.Health"} <= names


def test_list_empty_then_create_show_copy_delete(server, tmp_path):
    assert list(server.stub.List(pb.ListRequest()).models) == []
    statuses = create_from_gguf(server.stub, tmp_path, "tiny", system="You are terse.")
    assert statuses[0] == "parsing GGUF"
    assert statuses[-2:] == ["writing manifest", "success"]

    models = server.stub.List(pb.ListRequest()).models
    assert [m.name for m in models] == ["tiny:latest"]
    assert models[0].details.format == "gguf" and models[0].details.family == "llama"
    assert len(models[0].digest) == 64

    shown = server.stub.Show(pb.ShowRequest(model="TINY"))  # case-insensitive lookup
    assert shown.system == "You are terse."
    assert "\nFROM " + str(server.root / "blobs") in shown.modelfile
    assert "\nSYSTEM You are terse.\n" in shown.modelfile
    assert "completion" in shown.capabilities
    assert shown.model_info["general.architecture"] == "llama"
    assert shown.tensors and shown.tensors[0].name

    server.stub.Copy(pb.CopyRequest(source="tiny", destination="tiny-copy:v1"))
    names = sorted(m.name for m in server.stub.List(pb.ListRequest()).models)
    assert names == ["tiny-copy:v1", "tiny:latest"]
    digests = {m.digest for m in server.stub.List(pb.ListRequest()).models}
    assert len(digests) == 1  # the manifest bytes are copied as they are

    server.stub.Delete(pb.DeleteRequest(model="tiny"))
    assert [m.name for m in server.stub.List(pb.ListRequest()).models] == ["tiny-copy:v1"]
    server.stub.Show(pb.ShowRequest(model="tiny-copy:v1"))  # blobs still shared with the copy


def test_error_codes_and_texts(server):
    s = server.stub
    assert rpc_error(s.Show, pb.ShowRequest(model="missing")) == (grpc.StatusCode.NOT_FOUND, "model 'missing' not found")
    assert rpc_error(s.Show, pb.ShowRequest(model="bad name!")) == (grpc.StatusCode.INVALID_ARGUMENT, "invalid model name")
    assert rpc_error(s.Copy, pb.CopyRequest(source="missing", destination="x")) == (
        grpc.StatusCode.NOT_FOUND, 'model "missing" not found')
    assert rpc_error(s.Copy, pb.CopyRequest(source="a b", destination="x")) == (
        grpc.StatusCode.INVALID_ARGUMENT, 'source "a b" is invalid')
    assert rpc_error(s.Delete, pb.DeleteRequest(model="")) == (grpc.StatusCode.INVALID_ARGUMENT, "model is required")
    assert rpc_error(s.Delete, pb.DeleteRequest(model="missing")) == (grpc.StatusCode.NOT_FOUND, "model 'missing' not found")
    assert rpc_error(s.BlobExists, pb.BlobExistsRequest(digest="sha256:abc")) == (
        grpc.StatusCode.INVALID_ARGUMENT, "invalid digest format")
    missing = "sha256:" + "0" * 64
    assert rpc_error(s.BlobExists, pb.BlobExistsRequest(digest=missing)) == (
        grpc.StatusCode.NOT_FOUND, f'blob "{missing}" not found')
    code, text = rpc_error(s.Create, pb.CreateRequest(model="x"))
    assert (code, text) == (grpc.StatusCode.INVALID_ARGUMENT, "neither 'from' or 'files' was specified")
    code, _ = rpc_error(s.Create, pb.CreateRequest(model="bad name!", **{"from": "x"}))
    assert code == grpc.StatusCode.INVALID_ARGUMENT


def test_push_blob_verifies_digest(server, tmp_path):
    path = write_llama_gguf(tmp_path / "m.gguf")
    digest = upload(server.stub, path)
    server.stub.BlobExists(pb.BlobExistsRequest(digest=digest))
    again = server.stub.PushBlob(iter([pb.PushBlobRequest(digest=digest, data=b"ignored")]))
    assert again.created is False

    wrong = "sha256:" + "1" * 64
    code, text = rpc_error(server.stub.PushBlob, iter([pb.PushBlobRequest(digest=wrong, data=b"hello")]))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert text.startswith(f'digest mismatch, expected "{wrong}", got "sha256:')
    leftovers = [p.name for p in (server.root / "blobs").iterdir() if "1111" in p.name]
    assert leftovers == []


def test_service_defines_the_whole_api():
    # The proto defines the whole Ollama API now, even RPCs that later work implements.
    descriptor = pb.DESCRIPTOR.services_by_name["Ollama"]
    assert {m.name for m in descriptor.methods} >= {
        "List", "Show", "Copy", "Delete", "BlobExists", "PushBlob", "Create", "Pull", "Push", "Embed",
        "Embeddings", "ListRunning", "Generate", "Chat", "Version"}
