"""Serving under load: admission limits that answer at once, reflection v1, PushBlob's raw messages,
and the response caches of List and Show that must follow every change.

Why: past capacity a caller must get Ollama's 503 "server busy" at once (over REST) or
RESOURCE_EXHAUSTED at once (over gRPC) instead of waiting in an executor's unbounded queue; tools such
as grpcurl ask for reflection v1 first; and the servicer's cached responses must never outlive the
manifests they describe.
"""

import threading
import time

import grpc
import pytest
import requests
from google.protobuf import descriptor_pool, message_factory
from hypothesis import given
from hypothesis import strategies as st

from corral.protos.ollama.v1 import ollama_pb2 as pb
from corral.protos.ollama.v1 import ollama_pb2_grpc as pb_grpc
from corral.rest_shim.errors import BUSY
from corral.service.api.blob_upload import parse_push_blob
from corral.service.reflection import V1_SERVICE_NAME, V1ALPHA_SERVICE_NAME
from tests.models_helpers import create_from_gguf, hold_uploads


def busy_json():
    return {"error": BUSY}


# -- reflection -------------------------------------------------------------------------------------


def v1_messages():
    pool = descriptor_pool.Default()  # the server registered grpc.reflection.v1 there
    request = message_factory.GetMessageClass(pool.FindMessageTypeByName("grpc.reflection.v1.ServerReflectionRequest"))
    response = message_factory.GetMessageClass(
        pool.FindMessageTypeByName("grpc.reflection.v1.ServerReflectionResponse"))
    return request, response


def test_reflection_v1_lists_and_describes_services(server):
    request, response = v1_messages()
    call = server.channel.stream_stream("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
                                        request_serializer=request.SerializeToString,
                                        response_deserializer=response.FromString)
    answers = list(call(iter([request(list_services=""),
                              request(file_containing_symbol="ollama.v1.Ollama"),
                              request(file_containing_symbol=V1_SERVICE_NAME)])))
    listed = {s.name for s in answers[0].list_services_response.service}
    assert {"ollama.v1.Ollama", "grpc.health.v1.Health", V1_SERVICE_NAME, V1ALPHA_SERVICE_NAME} <= listed
    from google.protobuf import descriptor_pb2

    def files(answer):
        out = []
        for raw in answer.file_descriptor_response.file_descriptor_proto:
            f = descriptor_pb2.FileDescriptorProto()
            f.ParseFromString(raw)
            out.append(f)
        return out

    assert any(f.package == "ollama.v1" and f.service[0].name == "Ollama" for f in files(answers[1]))
    (v1,) = [f for f in files(answers[2]) if f.package == "grpc.reflection.v1"]
    method = v1.service[0].method[0]
    assert (method.input_type, method.output_type) == (".grpc.reflection.v1.ServerReflectionRequest",
                                                       ".grpc.reflection.v1.ServerReflectionResponse")


# -- admission ----------------------------------------------------------------------------------------


@pytest.fixture
def small_server(store_root):
    """A server that runs two calls at once, with a shim in front that serves two requests at once."""
    from corral.rest_shim.app import create_app
    from corral.rest_shim.http import create_http_server, serve_in_thread
    from corral.service.server import close_servicer, create_server
    from corral.store.models import ModelStore

    grpc_server, servicer, port = create_server(ModelStore(store_root), "127.0.0.1:0", max_requests=2)
    grpc_server.start()
    app = create_app(f"127.0.0.1:{port}")
    http = create_http_server(app, "127.0.0.1", 0, threads=4)  # more than gRPC admits: gRPC refuses
    serve_in_thread(http)
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield pb_grpc.OllamaStub(channel), f"http://127.0.0.1:{http.bind_addr[1]}", servicer
    finally:
        channel.close()
        http.stop()
        app.extensions["corral"].close()
        grpc_server.stop(grace=None).wait()
        close_servicer(servicer)


def test_grpc_past_capacity_is_refused_at_once_and_rest_says_busy(small_server, monkeypatch):
    stub, url, servicer = small_server
    release, threads = hold_uploads(stub, servicer, 2, monkeypatch)
    try:
        start = time.monotonic()
        with pytest.raises(grpc.RpcError) as err:
            stub.List(pb.ListRequest(), timeout=10)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        r = requests.get(url + "/api/tags", timeout=10)
        assert (r.status_code, r.json()) == (503, busy_json())
        r = requests.post(url + "/api/pull", json={"model": "x"}, timeout=10)  # a stream, refused before it starts
        assert (r.status_code, r.json()) == (503, busy_json())
        assert time.monotonic() - start < 2  # refused, not queued
    finally:
        release.set()
        for t in threads:
            t.join(10)
    assert requests.get(url + "/api/tags", timeout=10).json() == {"models": []}


def test_rest_past_capacity_is_refused_at_once(server, monkeypatch):
    from corral.rest_shim.app import create_app
    from corral.rest_shim.http import create_http_server, serve_in_thread

    app = create_app(server.target)
    http = create_http_server(app, "127.0.0.1", 0, threads=2)
    serve_in_thread(http)
    url = f"http://127.0.0.1:{http.bind_addr[1]}"
    release, arrived = threading.Event(), threading.Semaphore(0)
    blobs = server.servicer.store.blobs
    real_intact = blobs.intact

    def intact(*args, **kwargs):  # an upload that reached the service holds its REST slot until it ends
        arrived.release()
        return real_intact(*args, **kwargs)

    monkeypatch.setattr(blobs, "intact", intact)

    def slow_body():
        yield b"x"
        release.wait(30)

    statuses = []
    uploads = [threading.Thread(target=lambda: statuses.append(requests.post(
        f"{url}/api/blobs/sha256:{'b' * 64}", data=slow_body(), timeout=30).status_code)) for _ in range(2)]
    try:
        for t in uploads:
            t.start()
        for _ in uploads:
            assert arrived.acquire(timeout=10)
        start = time.monotonic()
        for path in ("/api/tags", "/api/version", "/"):
            r = requests.get(url + path, timeout=10)
            assert (r.status_code, r.json()) == (503, busy_json())
        assert time.monotonic() - start < 1
    finally:
        release.set()
        for t in uploads:
            t.join(10)
    assert statuses == [400, 400]  # the uploads themselves ran to their end (a wrong digest)
    assert requests.get(url + "/api/version", timeout=10).status_code == 200  # the slots came back
    http.stop()
    app.extensions["corral"].close()


def test_own_resource_exhausted_is_507_for_a_full_disk_else_500():
    from corral.rest_shim.errors import rpc_error_response

    class Err(grpc.RpcError):
        def __init__(self, details):
            self._details = details

        def code(self):
            return grpc.StatusCode.RESOURCE_EXHAUSTED

        def details(self):
            return self._details

    from flask import Flask

    with Flask(__name__).app_context():
        disk = rpc_error_response(Err("write /x: no space left on device"))
        assert (disk.status_code, disk.get_json()) == (507, {"error": "write /x: no space left on device"})
        other = rpc_error_response(Err("out of something else"))
        assert other.status_code == 500
        limit = rpc_error_response(Err("Concurrent RPC limit exceeded!"))
        assert (limit.status_code, limit.get_json()) == (503, busy_json())


def test_capacity_sizes(monkeypatch):
    from corral.store.config import Capacity, ConfigError

    monkeypatch.setenv("OLLAMA_MAX_QUEUE", "10")
    monkeypatch.setenv("OLLAMA_NUM_PARALLEL", "2")
    monkeypatch.setenv("OLLAMA_MAX_LOADED_MODELS", "3")
    monkeypatch.setenv("CORRAL_MAX_OTHER_REQUESTS", "5")
    assert Capacity.from_env().requests == 10 + 2 * 3 + 5
    monkeypatch.setenv("CORRAL_MAX_OTHER_REQUESTS", "0")
    with pytest.raises(ConfigError):
        Capacity.from_env()


# -- PushBlob's raw messages --------------------------------------------------------------------------


@given(digest=st.text(max_size=80), data=st.binary(max_size=3000))
def test_parse_push_blob_matches_protobuf(digest, data):
    chunk = parse_push_blob(pb.PushBlobRequest(digest=digest, data=data).SerializeToString())
    assert chunk.digest == digest and bytes(chunk.data) == data and chunk.data.readonly


def test_parse_push_blob_skips_unknown_fields_and_keeps_the_last_value():
    raw = (pb.PushBlobRequest(data=b"first").SerializeToString()
           + b"\x18\x96\x01"  # field 3, varint
           + b"\x25\x01\x02\x03\x04"  # field 4, fixed32
           + b"\x29" + b"\x00" * 8  # field 5, fixed64
           + b"\x32\x02hi"  # field 6, bytes
           + pb.PushBlobRequest(digest="sha256:x", data=b"second").SerializeToString())
    assert pb.PushBlobRequest.FromString(raw).data == b"second"
    chunk = parse_push_blob(raw)
    assert (chunk.digest, bytes(chunk.data)) == ("sha256:x", b"second")
    for bad in (b"\x12\x05abc", b"\x12", b"\x0b", b"\x80"):
        with pytest.raises(ValueError):
            parse_push_blob(bad)


def test_push_blob_of_several_chunks_over_grpc(server):
    data = bytes(range(256)) * 9000  # ~2.2 MiB: whole 1 MiB buffers and a tail
    import hashlib

    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    step = 700_000
    messages = [pb.PushBlobRequest(digest=digest)] + [pb.PushBlobRequest(data=data[i:i + step])
                                                      for i in range(0, len(data), step)]
    reply = server.stub.PushBlob(iter(messages))
    assert reply.created and reply.digest == digest
    assert (server.root / "blobs" / ("sha256-" + digest[7:])).read_bytes() == data


# -- cached responses follow changes ------------------------------------------------------------------


def test_show_and_list_responses_follow_changes(server, tmp_path):
    create_from_gguf(server.stub, tmp_path, "m", system="one")
    first = server.stub.Show(pb.ShowRequest(model="m"))
    assert server.stub.Show(pb.ShowRequest(model="m")) == first
    listed = server.stub.List(pb.ListRequest())
    req = pb.CreateRequest(model="m", system="two")
    setattr(req, "from", "m")
    list(server.stub.Create(req))
    assert server.stub.Show(pb.ShowRequest(model="m")).system == "two"
    assert server.stub.List(pb.ListRequest()).models[0].digest != listed.models[0].digest
    with_system = server.stub.Show(pb.ShowRequest(model="m", system="three"))
    assert with_system.system == "three" and server.stub.Show(pb.ShowRequest(model="m")).system == "two"


def test_delete_unloads_the_models_runner(server, tmp_path):
    create_from_gguf(server.stub, tmp_path, "m")
    engine = server.servicer.inference.engine
    spec = engine.spec("m", "")
    unloaded = []
    real = engine.unload
    engine.unload = lambda s: (unloaded.append(s.model_path), real(s))
    try:
        server.stub.Delete(pb.DeleteRequest(model="m"))
        with pytest.raises(grpc.RpcError):
            server.stub.Delete(pb.DeleteRequest(model="m"))  # not found: nothing to unload
    finally:
        engine.unload = real
    assert unloaded == [spec.model_path]
