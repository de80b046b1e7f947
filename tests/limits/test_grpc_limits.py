"""The gRPC server's transport limits: concurrent streams per connection (CORRAL_GRPC_MAX_STREAMS) and the
largest message it receives (CORRAL_GRPC_MAX_MESSAGE_BYTES).

Why: gRPC's default lets one connection open any number of streams; with the cap, calls past it wait in
the client for a stream (they neither fail nor reach the server), while another connection is served at
once. A message past the size limit is refused with RESOURCE_EXHAUSTED and the server goes on serving.
"""


import grpc
import pytest

from corral.protos.ollama.v1 import ollama_pb2 as pb
from corral.protos.ollama.v1 import ollama_pb2_grpc as pb_grpc
from tests.models_helpers import hold_uploads


@pytest.fixture
def start_server(store_root):
    from corral.service.server import close_servicer, create_server
    from corral.store.models import ModelStore

    started = []

    def start(max_requests: int = 10):
        grpc_server, servicer, port = create_server(ModelStore(store_root), "127.0.0.1:0", max_requests=max_requests)
        grpc_server.start()
        started.append((grpc_server, servicer))
        return servicer, f"127.0.0.1:{port}"

    try:
        yield start
    finally:
        for grpc_server, servicer in started:
            grpc_server.stop(grace=None).wait()
            close_servicer(servicer)


def test_default_streams_per_connection_is_the_capacity_plus_spares(monkeypatch):
    from corral.service.server import SPARE_STREAMS, max_streams
    from corral.store.config import GrpcTransport

    assert max_streams(GrpcTransport.from_env(), 100) == 100 + SPARE_STREAMS
    monkeypatch.setenv("CORRAL_GRPC_MAX_STREAMS", "3")
    assert max_streams(GrpcTransport.from_env(), 100) == 3


def test_calls_past_the_stream_limit_wait_for_a_stream(start_server, monkeypatch):
    monkeypatch.setenv("CORRAL_GRPC_MAX_STREAMS", "2")
    servicer, target = start_server(max_requests=10)
    own = [("grpc.use_local_subchannel_pool", 1)]  # two channels, two connections (not one shared)
    with grpc.insecure_channel(target, options=own) as channel, grpc.insecure_channel(target, options=own) as other:
        stub = pb_grpc.OllamaStub(channel)
        release, holders = hold_uploads(stub, servicer, 2, monkeypatch)
        third = stub.List.future(pb.ListRequest(), timeout=20)
        try:
            with pytest.raises(grpc.FutureTimeoutError):
                third.result(timeout=1)  # no stream free on this connection: it waits, it is not refused
            assert pb_grpc.OllamaStub(other).List(pb.ListRequest(), timeout=5).models == []  # another connection
        finally:
            release.set()
        assert third.result(timeout=10).models == []  # a stream came free: the waiting call ran
        for t in holders:
            t.join(10)


def test_a_message_past_the_size_limit_is_refused_and_the_server_goes_on(start_server, monkeypatch):
    monkeypatch.setenv("CORRAL_GRPC_MAX_MESSAGE_BYTES", str(64 * 1024))
    _, target = start_server()
    at = pb.EmbedRequest(model="nope", input=["x" * (64 * 1024 - 10)])
    assert at.ByteSize() == 64 * 1024
    past = pb.EmbedRequest(model="nope", input=["x" * (64 * 1024 - 9)])
    with grpc.insecure_channel(target) as channel:
        stub = pb_grpc.OllamaStub(channel)
        with pytest.raises(grpc.RpcError) as err:
            list(stub.Embed(past, timeout=10))
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        with pytest.raises(grpc.RpcError) as err:
            list(stub.Embed(at, timeout=10))
        assert err.value.code() == grpc.StatusCode.NOT_FOUND  # at the limit: it reached the service
        assert stub.List(pb.ListRequest(), timeout=5).models == []
