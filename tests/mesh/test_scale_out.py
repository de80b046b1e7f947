"""Scale-out on a real proxy: three `corral serve` replicas (CORRAL_PULL_ON_DEMAND=1) behind Debian's nginx
running the shipped deploy/nginx/corral.conf (ports substituted), and Debian's docker-registry as the source
of truth. Model affinity is shown by each replica's own /metrics; the replica the hash picks is computed
with nginx's ketama ring (tests/mesh/nginx.py)."""

import threading
import time

import grpc
import pytest
import requests
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from corral.protos.ollama.v1 import ollama_pb2 as pb
from corral.protos.ollama.v1 import ollama_pb2_grpc as pb_grpc
from corral.store.names import parse_name
from tests.mesh.conftest import Serve, channel, make_model, wait_until
from tests.mesh.nginx import Nginx, free_port, pick
from tests.registry.conftest import Registry

# What a gRPC client behind a proxy should do (README "Scale-out"): retry UNAVAILABLE, which a draining
# replica answers between its SIGTERM and its exit.
RETRY_CONFIG = ('{"methodConfig": [{"name": [{"service": "ollama.v1.Ollama"}], "retryPolicy": {'
                '"maxAttempts": 5, "initialBackoff": "0.5s", "maxBackoff": "4s", "backoffMultiplier": 2, '
                '"retryableStatusCodes": ["UNAVAILABLE"]}}]}')
ENV = {"CORRAL_PULL_ON_DEMAND": "1", "CORRAL_PULL_INSECURE": "1", "CORRAL_DRAIN_SECONDS": "10"}


def model_metadata(name: str):
    """What the REST shim sends and what a gRPC client behind the proxy should send."""
    return (("x-ollama-model", parse_name(name).display),)


def shows_ok(server: Serve) -> int:
    """grpc_server_handled_total for Show with code OK, from the replica's own /metrics."""
    text = requests.get(server.url + "/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if (sample.name == "grpc_server_handled_total" and sample.labels.get("grpc_method") == "Show"
                    and sample.labels.get("grpc_code") == "OK"):
                return int(sample.value)
    return 0


def serving(target: str) -> bool:
    try:
        with channel(target) as ch:
            reply = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=2)
        return reply.status == health_pb2.HealthCheckResponse.SERVING
    except grpc.RpcError:
        return False


class Cluster:
    def __init__(self, tmp_path):
        self.tmp = tmp_path
        self.registry = Registry(tmp_path / "registry").start()
        self.ports = [free_port() for _ in range(3)]
        self.replicas: list[Serve] = []
        for i, port in enumerate(self.ports):
            self.replicas.append(self.start_replica(i))
        self.nginx = Nginx(tmp_path / "nginx", self.ports).start()

    def start_replica(self, i: int) -> Serve:
        return Serve(self.tmp / f"replica{i}", "--grpc-address", f"127.0.0.1:{self.ports[i]}", env=ENV).start()

    def index(self, server: str) -> int:
        return self.nginx.servers.index(server)

    def seed(self, names: list[str]) -> None:
        """Pushes tiny models under `names` to the registry from replica 0, then deletes them there: every
        replica starts without them."""
        with channel(self.replicas[0].target) as ch:
            stub = pb_grpc.OllamaStub(ch)
            make_model(stub, self.tmp / "seed", "seed")
            for name in names:
                stub.Copy(pb.CopyRequest(source="seed", destination=name))
                assert list(stub.Push(pb.PushRequest(model=name, insecure=True)))[-1].status == "success"
                stub.Delete(pb.DeleteRequest(model=name))
            stub.Delete(pb.DeleteRequest(model="seed"))

    def two_models(self) -> tuple[str, str]:
        """Two names whose requests nginx sends to different replicas."""
        names = [f"{self.registry.host}/test/m{i}:latest" for i in range(40)]
        first = names[0]
        second = next(n for n in names[1:] if self.pick(n) != self.pick(first))
        return first, second

    def pick(self, name: str, down: tuple[str, ...] = ()) -> int:
        return self.index(pick(parse_name(name).display, self.nginx.servers, down))

    def close(self) -> None:
        self.nginx.stop()
        for r in self.replicas:
            r.stop()
        self.registry.stop()


@pytest.fixture
def cluster(tmp_path):
    (tmp_path / "seed").mkdir()
    c = Cluster(tmp_path)
    yield c
    c.close()


def test_model_affinity_and_failover_with_pull_on_demand(cluster):
    a, b = cluster.two_models()
    cluster.seed([a, b])
    at, bt = cluster.pick(a), cluster.pick(b)
    assert [shows_ok(r) for r in cluster.replicas] == [0, 0, 0]

    with channel(cluster.nginx.target) as ch:
        stub = pb_grpc.OllamaStub(ch)
        for _ in range(50):  # the first of each pulls the model on the replica the hash picks
            assert stub.Show(pb.ShowRequest(model=a), metadata=model_metadata(a), timeout=60).details.family == "llama"
            assert stub.Show(pb.ShowRequest(model=b), metadata=model_metadata(b), timeout=60).details.family == "llama"
    expected = [0, 0, 0]
    expected[at] += 50
    expected[bt] += 50
    assert [shows_ok(r) for r in cluster.replicas] == expected
    for i, r in enumerate(cluster.replicas):
        pulled = [line for line in r.log if "on demand" in line and "pulled" in line]
        assert len(pulled) == (i == at) + (i == bt), (i, pulled)

    # The REST shim in front of the proxy sets x-ollama-model itself: /api/show lands on A's replica too.
    shim = Serve(cluster.tmp / "shim", "--no-grpc", "--grpc-target", cluster.nginx.target).start()
    try:
        for _ in range(10):
            reply = requests.post(shim.url + "/api/show", json={"model": a}, timeout=30)
            assert reply.status_code == 200, reply.text
    finally:
        shim.stop()
    expected[at] += 10
    assert [shows_ok(r) for r in cluster.replicas] == expected

    # Kill A's replica: A's requests move to the next replica of the ring, which pulls A and answers.
    cluster.replicas[at].proc.kill()
    cluster.replicas[at].wait()
    heir = cluster.pick(a, down=(cluster.nginx.servers[at],))
    assert heir != at
    before = shows_ok(cluster.replicas[heir])
    with channel(cluster.nginx.target) as ch:
        stub = pb_grpc.OllamaStub(ch)
        for _ in range(10):
            assert stub.Show(pb.ShowRequest(model=a), metadata=model_metadata(a), timeout=60).details.family == "llama"
        done = list(stub.Generate(pb.GenerateRequest(model=a, prompt="hi", options={"num_predict": 3}),
                                  metadata=model_metadata(a), timeout=120))
        assert done[-1].done
    assert shows_ok(cluster.replicas[heir]) == before + 10
    assert any(f"pulled {a} on demand" in line for line in cluster.replicas[heir].log)


def test_concurrent_requests_wait_for_one_pull(cluster):
    a, _ = cluster.two_models()
    streamed = f"{cluster.registry.host}/test/streamed:latest"
    cluster.seed([a, streamed])
    target = cluster.replicas[cluster.pick(a)]
    results: list = []

    def show():
        try:
            with channel(cluster.nginx.target) as ch:
                reply = pb_grpc.OllamaStub(ch).Show(pb.ShowRequest(model=a), metadata=model_metadata(a), timeout=60)
            results.append(reply.details.format)
        except grpc.RpcError as exc:
            results.append(exc)

    threads = [threading.Thread(target=show) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == ["gguf"] * 8
    assert sum("pulling" in line and "on demand" in line for line in target.log) == 1

    # A name the registry lacks is answered as without pull-on-demand.
    missing = f"{cluster.registry.host}/test/nope:latest"
    with channel(cluster.nginx.target) as ch, pytest.raises(grpc.RpcError) as err:
        pb_grpc.OllamaStub(ch).Show(pb.ShowRequest(model=missing), metadata=model_metadata(missing), timeout=60)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert err.value.details() == f"model '{missing}' not found"

    # EmbedStream names its model in its first message: pulled on demand too, and counted in /metrics.
    replica = cluster.replicas[2]
    first = pb.EmbedStreamRequest(config=pb.EmbedStreamConfig(model=streamed))
    first.items.add(id="a", text="one")
    rest = pb.EmbedStreamRequest(items=[pb.EmbedItem(id="b", text="two"), pb.EmbedItem(id="c", text="three")])
    with channel(replica.target) as ch:
        replies = list(pb_grpc.OllamaStub(ch).EmbedStream(iter([first, rest]), timeout=120))
    assert [r.id for reply in replies for r in reply.results] == ["a", "b", "c"]
    assert any(f"pulled {streamed} on demand" in line for line in replica.log)
    scraped = requests.get(replica.url + "/metrics", timeout=10).text
    texts = [s.value for f in text_string_to_metric_families(scraped) for s in f.samples
             if s.name == "corral_embedded_texts_total" and s.labels.get("model") == streamed]
    assert texts == [3]


def test_rolling_restart_loses_no_request(cluster):
    a, b = cluster.two_models()
    cluster.seed([a, b])
    stop = threading.Event()
    answered: list[float] = []
    failures: list = []

    def loop():
        options = [("grpc.enable_http_proxy", 0), ("grpc.service_config", RETRY_CONFIG)]
        with grpc.insecure_channel(cluster.nginx.target, options) as ch:
            stub = pb_grpc.OllamaStub(ch)
            while not stop.is_set():
                for name in (a, b):
                    try:
                        stub.Show(pb.ShowRequest(model=name), metadata=model_metadata(name), timeout=60)
                        answered.append(time.monotonic())
                    except grpc.RpcError as exc:
                        failures.append((name, exc.code(), exc.details()))

    client = threading.Thread(target=loop)
    client.start()
    try:
        assert wait_until(lambda: len(answered) >= 20, timeout=60)
        for i in range(3):
            # As an operator does with open-source nginx (no active health checks): take the replica out
            # of the upstream (reload), SIGTERM it, start it again, put it back.
            cluster.nginx.set_down(cluster.ports[i])
            old = cluster.replicas[i]
            signalled = time.monotonic()
            old.signal()
            assert old.wait(30) == 0
            cluster.replicas[i] = cluster.start_replica(i)
            assert wait_until(lambda: serving(cluster.replicas[i].target), timeout=30)
            cluster.nginx.set_down()
            count = len(answered)
            assert wait_until(lambda: len(answered) >= count + 20, timeout=60)
            assert any(t > signalled for t in answered)
    finally:
        stop.set()
        client.join(60)
    assert failures == []
    assert len(answered) >= 80
