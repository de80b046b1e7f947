"""/metrics after a known sequence of requests shows exact counts, for REST (per route template) and for
gRPC (per method and code), plus uploads, tokens, loads and loaded models; on the REST port and on
CORRAL_METRICS_ADDRESS. A real `corral serve` process, so the counts start from zero."""

import grpc
import requests
from prometheus_client.parser import text_string_to_metric_families

from corral.protos.ollama.v1 import ollama_pb2 as pb
from corral.protos.ollama.v1 import ollama_pb2_grpc as pb_grpc
from tests.mesh.conftest import channel, make_model, wait_until


def samples(text: str) -> dict:
    """{(sample name, sorted label items): value}"""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(scraped: dict, name: str, **labels) -> float:
    return scraped.get((name, tuple(sorted(labels.items()))), 0.0)


def grpc_handled(scraped, method, code, kind="unary"):
    return value(scraped, "grpc_server_handled_total", grpc_type=kind, grpc_service="ollama.v1.Ollama",
                 grpc_method=method, grpc_code=code)


def test_exact_counts_for_rest_and_grpc(serve_factory, tmp_path):
    server = serve_factory(env={"CORRAL_METRICS_ADDRESS": "127.0.0.1:0"})
    ch = channel(server.target)
    stub = pb_grpc.OllamaStub(ch)
    size = make_model(stub, tmp_path)

    http = requests.Session()
    for _ in range(3):
        assert http.post(server.url + "/api/show", json={"model": "tiny"}).status_code == 200
    assert http.post(server.url + "/api/show", json={"model": "missing"}).status_code == 404
    for i in range(4):  # raw paths with names nobody created: one route label, no model label
        assert http.get(f"{server.url}/v1/models/nobody-{i}").status_code == 404
    assert http.get(server.url + "/no/such/path").status_code == 404
    stub.Show(pb.ShowRequest(model="tiny"))
    stub.Show(pb.ShowRequest(model="tiny"))
    try:
        stub.Show(pb.ShowRequest(model="nope"))
    except grpc.RpcError as exc:
        assert exc.code() == grpc.StatusCode.NOT_FOUND
    unknown = ch.unary_unary("/evil.Service/Method_x1", request_serializer=None, response_deserializer=None)
    try:
        unknown(b"")
    except grpc.RpcError as exc:
        assert exc.code() == grpc.StatusCode.UNIMPLEMENTED
    final = http.post(server.url + "/api/generate", json={
        "model": "tiny", "prompt": "hello", "stream": False, "options": {"num_predict": 5, "seed": 1}}).json()
    assert final["eval_count"] == 5
    embed = pb.EmbedRequest(model="tiny", input=["one", "two", "three"])
    assert list(stub.Embed(embed))

    text = http.get(server.url + "/metrics").text
    m = samples(text)
    # REST, by route template, method and status
    assert value(m, "corral_http_requests_total", route="/api/show", method="POST", status="200") == 3
    assert value(m, "corral_http_requests_total", route="/api/show", method="POST", status="404") == 1
    assert value(m, "corral_http_requests_total", route="/v1/models/<path:model>", method="GET", status="404") == 4
    assert value(m, "corral_http_requests_total", route="unmatched", method="GET", status="404") == 1
    assert value(m, "corral_http_requests_total", route="/api/generate", method="POST", status="200") == 1
    assert value(m, "corral_http_request_duration_seconds_count", route="/api/show", method="POST") == 4
    assert value(m, "corral_http_requests_in_flight") == 1  # this scrape
    assert "nobody-" not in text and "evil" not in text and "Method_x1" not in text
    # gRPC, by method and code: the shim's hops and the direct calls together
    assert grpc_handled(m, "Show", "OK") == 5
    assert grpc_handled(m, "Show", "NOT_FOUND") == 6  # /api/show and 4 x /v1/models/<model> via REST, 1 direct
    assert grpc_handled(m, "PushBlob", "OK", "client_stream") == 1
    assert grpc_handled(m, "Create", "OK", "server_stream") == 1
    assert grpc_handled(m, "Generate", "OK", "server_stream") == 1
    assert grpc_handled(m, "Embed", "OK", "server_stream") == 1
    assert value(m, "grpc_server_started_total", grpc_type="unary", grpc_service="ollama.v1.Ollama",
                 grpc_method="Show") == 11
    assert value(m, "grpc_server_handling_seconds_count", grpc_type="unary", grpc_service="ollama.v1.Ollama",
                 grpc_method="Show") == 11
    assert value(m, "corral_grpc_requests_in_flight") == 0
    # the work behind them
    assert value(m, "corral_uploaded_bytes_total") == size
    assert value(m, "corral_generated_tokens_total", model="tiny") == 5
    assert value(m, "corral_prompt_tokens_total", model="tiny") == final["prompt_eval_count"]
    assert value(m, "corral_embedded_texts_total", model="tiny") == 3
    assert value(m, "corral_model_loads_total", result="success") == 1  # generate and embed share one runner
    assert value(m, "corral_model_load_seconds_count") == 1
    assert value(m, "corral_models_loaded") == 1
    assert value(m, "corral_model_loaded_bytes", model="tiny:latest") > size
    assert value(m, "corral_scheduler_queue_depth") == 0
    assert value(m, "corral_scheduler_rejections_total") == 0
    assert value(m, "corral_model_evictions_total") == 0
    assert value(m, "corral_runner_crashes_total") == 0

    # the separate listener serves the same registry (without the REST scrape in flight)
    def scrape_separate():  # a request is counted when its body is closed, just after the client has it all
        got = samples(requests.get(f"http://127.0.0.1:{server.metrics_port}/metrics").text)
        return got if value(got, "corral_http_requests_in_flight") == 0 else None

    separate = wait_until(scrape_separate, timeout=5, step=0.02)
    assert grpc_handled(separate, "Show", "OK") == 5
    assert value(separate, "corral_http_requests_total", route="/metrics", method="GET", status="200") == 1
    assert value(separate, "corral_http_requests_in_flight") == 0
    ch.close()


def test_grpc_only_serve_has_its_own_metrics_port(serve_factory):
    server = serve_factory("--no-http", env={"CORRAL_METRICS_ADDRESS": "127.0.0.1:0"})
    with channel(server.target) as ch:
        stub = pb_grpc.OllamaStub(ch)
        for _ in range(3):
            stub.List(pb.ListRequest())
    m = samples(requests.get(f"http://127.0.0.1:{server.metrics_port}/metrics").text)
    assert grpc_handled(m, "List", "OK") == 3
    assert not any(name.startswith("corral_http_requests") for name, _ in m)  # no shim in this process
