"""A huge request on a real server: a REST client that goes away, or a gRPC deadline that passes, stops
its work at once (other requests for the model are answered within seconds), and SIGTERM during it exits
within CORRAL_DRAIN_SECONDS.

A prompt of a million characters on a tiny model with a 32,768-token context: reading the 32,767 tokens
kept takes seconds here, and generating 2,000 tokens next to them takes longer still (minutes with a real
model). One sequence (OLLAMA_NUM_PARALLEL=1), so the small request has to wait for the huge one unless
that one stops.
"""

import json
import signal
import socket
import sys
import threading
import time
from pathlib import Path

import grpc
import pytest
import requests
from google.protobuf import struct_pb2
from prometheus_client import REGISTRY

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from corral.protos.ollama.v1 import ollama_pb2 as pb  # noqa: E402
from tests.gguf_models import write_llama_gguf  # noqa: E402
from tests.models_helpers import upload  # noqa: E402

NUM_CTX = 32768
OPTIONS = {"num_ctx": NUM_CTX, "num_predict": 2000}
HUGE = ("the sky is blue and the sun is red " * 30_000)[:1_000_000]


@pytest.fixture(autouse=True)
def _one_sequence(monkeypatch):
    monkeypatch.setenv("OLLAMA_NUM_PARALLEL", "1")


def create_long_model(stub, tmp_path: Path, name: str = "long") -> None:
    digest = upload(stub, write_llama_gguf(tmp_path / "long.gguf", n_ctx=NUM_CTX))
    req = pb.CreateRequest(model=name)
    req.files["model.gguf"] = digest
    list(stub.Create(req))


def handled(method: str, code: str) -> float:
    """grpc_server_handled_total for one method and status code (all servers of this process)."""
    return sum(sample.value for metric in REGISTRY.collect() if metric.name == "grpc_server_handled"
               for sample in metric.samples if sample.name.endswith("_total")
               and sample.labels.get("grpc_method") == method and sample.labels.get("grpc_code") == code)


def wait_for(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def small_generate(url: str, model: str = "long") -> float:
    """Seconds for a short generate on the same model (and its answer checked)."""
    start = time.perf_counter()
    reply = requests.post(url + "/api/generate", timeout=60, json={
        "model": model, "prompt": "hello", "stream": False, "options": {"num_ctx": NUM_CTX, "num_predict": 2}})
    assert reply.status_code == 200 and reply.json()["eval_count"] == 2
    return time.perf_counter() - start


def send_raw(url: str, path: str, body: dict) -> socket.socket:
    """A request written on a socket of our own, so that the test can close it (the client going away)."""
    host, port = url.split("//")[1].split(":")
    data = json.dumps(body).encode()
    sock = socket.create_connection((host, int(port)))
    sock.sendall(b"POST %s HTTP/1.1\r\nHost: %s:%s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
                 % (path.encode(), host.encode(), port.encode(), len(data)) + data)
    return sock


@pytest.mark.parametrize("stream", [False, True], ids=["stream-false", "stream-true"])
def test_rest_client_gone_stops_the_work(shim, tmp_path, stream):
    """The client closes its connection while the huge prompt is read (before anything was written to
    it): the gRPC call is cancelled, the runner stops, and a small request is answered at once."""
    create_long_model(shim.server.stub, tmp_path)
    small_generate(shim.url)  # loaded
    before = handled("Generate", "CANCELLED")
    sock = send_raw(shim.url, "/api/generate", {"model": "long", "prompt": HUGE, "stream": stream, "options": OPTIONS})
    time.sleep(0.7)
    sock.close()
    gone = time.perf_counter()
    assert wait_for(lambda: handled("Generate", "CANCELLED") > before, 5)
    assert small_generate(shim.url) < 3
    assert time.perf_counter() - gone < 5


def test_rest_chat_client_gone_stops_the_work(shim, tmp_path):
    """The same for a chat of many turns longer than the context (the turns that fit are measured on
    the runner first)."""
    create_long_model(shim.server.stub, tmp_path)
    small_generate(shim.url)
    before = handled("Chat", "CANCELLED")
    turns = []
    for i in range(0, len(HUGE), 20_000):
        turns += [{"role": "user", "content": HUGE[i : i + 20_000]}, {"role": "assistant", "content": "ok"}]
    sock = send_raw(shim.url, "/api/chat", {"model": "long", "messages": turns[:-1], "stream": False,
                                            "options": OPTIONS})
    time.sleep(0.7)
    sock.close()
    assert wait_for(lambda: handled("Chat", "CANCELLED") > before, 5)
    assert small_generate(shim.url) < 3


def test_grpc_deadline_stops_the_work(server, tmp_path):
    create_long_model(server.stub, tmp_path)

    def generate(prompt: str, num_predict: int, **kw):
        options = struct_pb2.Struct()
        options.update(dict(OPTIONS, num_predict=num_predict))
        return list(server.stub.Generate(pb.GenerateRequest(model="long", prompt=prompt, options=options), **kw))

    generate("hi", 1)  # loaded
    with pytest.raises(grpc.RpcError) as err:
        generate(HUGE, 2000, timeout=0.7)
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    start = time.perf_counter()
    assert generate("hello", 2)[-1].metrics.eval_count == 2
    assert time.perf_counter() - start < 3


def test_sigterm_during_a_huge_request_exits_within_the_drain_time(tmp_path):
    """CORRAL_DRAIN_SECONDS=2: the huge request is cancelled when the drain time is up, and `corral serve`
    exits 0 right after."""
    from tests.mesh.conftest import Serve, channel, make_model

    server = Serve(tmp_path, env={"CORRAL_DRAIN_SECONDS": "2", "OLLAMA_NUM_PARALLEL": "1"}).start()
    try:
        ch = channel(server.target)
        from corral.protos.ollama.v1 import ollama_pb2_grpc as pb_grpc

        make_model(pb_grpc.OllamaStub(ch), tmp_path, name="long", n_ctx=NUM_CTX)
        small_generate(server.url)
        reply: dict = {}

        def huge():
            try:
                reply["status"] = requests.post(server.url + "/api/generate", timeout=120, json={
                    "model": "long", "prompt": HUGE, "stream": False, "options": OPTIONS}).status_code
            except requests.RequestException as exc:
                reply["error"] = exc

        thread = threading.Thread(target=huge)
        thread.start()
        time.sleep(1.0)
        signalled = time.monotonic()
        server.signal(signal.SIGTERM)
        assert server.wait(30) == 0
        assert time.monotonic() - signalled < 2 + 3
        thread.join(10)
        assert reply and reply.get("status") != 200  # it did not finish
        ch.close()
    finally:
        server.stop()
