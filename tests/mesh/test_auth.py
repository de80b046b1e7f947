"""Bearer keys (CORRAL_API_KEYS / CORRAL_API_KEYS_FILE) on a real `corral serve`: REST and gRPC refuse a
call without a valid key (401 / UNAUTHENTICATED) and serve one with it, through the official `ollama` and
`openai` clients too; health, `/` and /metrics stay open unless CORRAL_AUTH_METRICS=1."""

import grpc
import ollama
import openai
import pytest
import requests
from grpc_health.v1 import health_pb2, health_pb2_grpc

from corral.protos.ollama.v1 import ollama_pb2 as pb
from corral.protos.ollama.v1 import ollama_pb2_grpc as pb_grpc
from tests.mesh.conftest import Serve, channel, make_model

KEY, OTHER = "k-9f2c1e7a", "second-key"
GOOD = [("authorization", f"Bearer {KEY}")]


@pytest.fixture(scope="module")
def secured(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("auth")
    keys_file = tmp / "keys"
    keys_file.write_text(f"# operators\n{OTHER}\n\n")
    server = Serve(tmp, env={"CORRAL_API_KEYS": f" {KEY} ,", "CORRAL_API_KEYS_FILE": str(keys_file)}).start()
    ch = channel(server.target)
    make_model(pb_grpc.OllamaStub(ch), tmp, metadata=GOOD)
    yield server
    ch.close()
    server.stop()


def test_rest_needs_a_key(secured):
    url = secured.url
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}, {"Authorization": f"Basic {KEY}"}):
        reply = requests.get(url + "/api/tags", headers=headers)
        assert reply.status_code == 401
        assert reply.json() == {"error": "unauthorized"}
        assert reply.headers["WWW-Authenticate"] == "Bearer"
    reply = requests.get(url + "/v1/models")
    assert reply.status_code == 401 and reply.json()["error"]["code"] == "invalid_api_key"
    for key in (KEY, OTHER):  # either source of keys
        assert requests.get(url + "/api/tags", headers={"Authorization": f"Bearer {key}"}).status_code == 200
    # open without a key: the health answer and the metrics
    assert requests.get(url + "/").text == "Ollama is running"
    assert requests.get(url + "/metrics").status_code == 200


def test_grpc_needs_a_key(secured):
    with channel(secured.target) as ch:
        stub = pb_grpc.OllamaStub(ch)
        for metadata in (None, [("authorization", "Bearer nope")], [("authorization", KEY)]):
            with pytest.raises(grpc.RpcError) as err:
                stub.List(pb.ListRequest(), metadata=metadata)
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED and err.value.details() == "unauthorized"
        with pytest.raises(grpc.RpcError) as err:  # a stream is refused before it starts
            list(stub.Generate(pb.GenerateRequest(model="tiny", prompt="hi")))
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert [m.name for m in stub.List(pb.ListRequest(), metadata=GOOD).models] == ["tiny:latest"]
        health = health_pb2_grpc.HealthStub(ch)
        assert health.Check(health_pb2.HealthCheckRequest(service="ollama.v1.Ollama")).status == \
            health_pb2.HealthCheckResponse.SERVING


def test_official_clients_with_the_key(secured):
    client = ollama.Client(host=secured.url, headers={"Authorization": f"Bearer {KEY}"})
    assert [m.model for m in client.list().models] == ["tiny:latest"]
    chunks = list(client.generate(model="tiny", prompt="hi", options={"num_predict": 3, "seed": 1}, stream=True))
    assert chunks[-1].done and chunks[-1].eval_count == 3  # the stream's gRPC call carried the key too
    with pytest.raises(ollama.ResponseError) as err:
        ollama.Client(host=secured.url).list()
    assert err.value.status_code == 401 and err.value.error == "unauthorized"

    oa = openai.OpenAI(base_url=secured.url + "/v1", api_key=KEY)
    assert [m.id for m in oa.models.list().data] == ["tiny:latest"]
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=secured.url + "/v1", api_key="ollama").models.list()


def test_metrics_behind_the_key(serve_factory):
    server = serve_factory(env={"CORRAL_API_KEYS": KEY, "CORRAL_AUTH_METRICS": "1",
                                "CORRAL_METRICS_ADDRESS": "127.0.0.1:0"})
    for url in (server.url + "/metrics", f"http://127.0.0.1:{server.metrics_port}/metrics"):
        assert requests.get(url).status_code == 401
        reply = requests.get(url, headers={"Authorization": f"Bearer {KEY}"})
        assert reply.status_code == 200 and "grpc_server_handled_total" in reply.text
    assert requests.get(server.url + "/").status_code == 200  # health stays open


def test_no_keys_changes_nothing(serve_factory):
    server = serve_factory()
    assert requests.get(server.url + "/api/tags").json() == {"models": []}
    with channel(server.target) as ch:
        assert list(pb_grpc.OllamaStub(ch).List(pb.ListRequest()).models) == []


def test_cli_sends_corral_api_key(secured, tmp_path):
    import os
    import subprocess

    from tests.mesh.conftest import EXE

    env = {k: v for k, v in os.environ.items() if not k.startswith(("OLLAMA_", "CORRAL_"))}
    env.update(CORRAL_GRPC_TARGET=secured.target, HOME=str(tmp_path))
    refused = subprocess.run([EXE, "list"], env=env, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1 and refused.stderr.strip() == "Error: unauthorized"
    listed = subprocess.run([EXE, "list"], env=dict(env, CORRAL_API_KEY=KEY), capture_output=True, text=True,
                            timeout=60)
    assert listed.returncode == 0 and "tiny:latest" in listed.stdout
