"""Request ids and traces on a real `corral serve`: a REST request's x-request-id is echoed and carried over the
shim's gRPC call into the service's log line for it (text and CORRAL_LOG_FORMAT=json), with the trace id of
its W3C traceparent; with OTEL_TRACES_EXPORTER=console the SDK's spans continue that trace."""

import json
import re

import grpc
import requests

from corral.protos.ollama.v1 import ollama_pb2 as pb
from corral.protos.ollama.v1 import ollama_pb2_grpc as pb_grpc
from tests.mesh.conftest import channel, make_model, wait_until

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


def show(server, **headers):
    return requests.post(server.url + "/api/show", json={"model": "tiny"}, headers=headers, timeout=30)


def setup_model(server, tmp_path):
    with channel(server.target) as ch:
        make_model(pb_grpc.OllamaStub(ch), tmp_path)


def test_request_id_is_echoed_and_logged_as_json(serve_factory, tmp_path):
    server = serve_factory(env={"CORRAL_LOG_FORMAT": "json"})
    setup_model(server, tmp_path)
    reply = show(server, **{"x-request-id": "req-abc-123", "traceparent": TRACEPARENT})
    assert reply.status_code == 200 and reply.headers["x-request-id"] == "req-abc-123"

    def logged():
        return [r for r in map(json.loads, (line for line in server.log if line.startswith("{")))
                if r.get("request_id") == "req-abc-123"]

    records = wait_until(logged, timeout=5)
    assert records, "".join(server.log)
    record = records[0]
    assert record["logger"] == "corral.access" and "/ollama.v1.Ollama/Show OK" in record["message"]
    assert record["trace_id"] == TRACE_ID and record["level"] == "INFO"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", record["time"])
    # Every line corral logged is one JSON object (the start-up lines too).
    corral_lines = [line for line in server.log if '"logger": "corral' in line or "corral" in line[:60]]
    assert corral_lines and all(isinstance(json.loads(line), dict) for line in corral_lines)
    assert any(json.loads(line)["message"].startswith("gRPC listening on") for line in corral_lines)

    # No id sent: one is made, echoed and logged; an unusable one (spaces, too long) is replaced.
    for sent in ({}, {"x-request-id": "has spaces"}, {"x-request-id": "x" * 200}):
        reply = show(server, **sent)
        made = reply.headers["x-request-id"]
        assert re.fullmatch(r"[0-9a-f]{32}", made)
        assert wait_until(lambda: any(f'"request_id": "{made}"' in line for line in server.log), timeout=5)


def test_text_log_lines_carry_the_ids_and_grpc_clients_may_send_them(serve_factory, tmp_path):
    server = serve_factory()
    setup_model(server, tmp_path)
    reply = show(server, **{"X-Request-Id": "text-id-7", "traceparent": TRACEPARENT})
    assert reply.headers["x-request-id"] == "text-id-7"
    assert wait_until(lambda: any("/ollama.v1.Ollama/Show OK" in line and "request_id=text-id-7" in line
                                  and f"trace_id={TRACE_ID}" in line for line in server.log), timeout=5)
    # A gRPC client's own x-request-id.
    with channel(server.target) as ch:
        pb_grpc.OllamaStub(ch).Show(pb.ShowRequest(model="tiny"), metadata=(("x-request-id", "grpc-id-9"),))
        try:
            pb_grpc.OllamaStub(ch).Show(pb.ShowRequest(model="nope"), metadata=(("x-request-id", "grpc-id-10"),))
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.NOT_FOUND
    assert wait_until(lambda: any("Show OK" in line and "request_id=grpc-id-9" in line for line in server.log))
    assert wait_until(lambda: any("Show NOT_FOUND" in line and "request_id=grpc-id-10" in line
                                  for line in server.log))


def test_console_exporter_spans_continue_the_callers_trace(serve_factory, tmp_path):
    server = serve_factory(env={"OTEL_TRACES_EXPORTER": "console", "OTEL_SERVICE_NAME": "corral-test"})
    setup_model(server, tmp_path)
    reply = show(server, **{"x-request-id": "otel-1", "traceparent": TRACEPARENT})
    assert reply.status_code == 200 and reply.headers["x-request-id"] == "otel-1"

    def spans():
        text = "".join(server.log)
        return [json.loads(m.group(0)) for m in re.finditer(r"(?ms)^\{\n.*?^\}\n", text)]

    def ours():
        return [s for s in spans() if s.get("context", {}).get("trace_id") == f"0x{TRACE_ID}"]

    assert wait_until(lambda: len(ours()) >= 2, timeout=10), "".join(server.log)
    names = {s["name"] for s in ours()}
    assert {"POST /api/show", "/ollama.v1.Ollama/Show"} <= names
    by_name = {s["name"]: s for s in ours()}
    rest, rpc = by_name["POST /api/show"], by_name["/ollama.v1.Ollama/Show"]
    assert rest["parent_id"] == "0x00f067aa0ba902b7"  # the caller's span
    assert rpc["parent_id"] == rest["context"]["span_id"]  # the shim's call continues the REST span
    assert rest["resource"]["attributes"]["service.name"] == "corral-test"
    # The service's log line for the request names the trace too.
    assert wait_until(lambda: any("request_id=otel-1" in line and f"trace_id={TRACE_ID}" in line
                                  for line in server.log))


def test_otlp_exporter_delivers_spans_to_a_collector(serve_factory, tmp_path):
    """OTEL_EXPORTER_OTLP_ENDPOINT set: spans reach an OTLP/gRPC collector (a real TraceService server, the
    protocol's own protos) with the caller's trace id, the rpc's name and the service name."""
    from concurrent import futures

    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

    received: list = []

    class Collector(trace_service_pb2_grpc.TraceServiceServicer):
        def Export(self, request, context):
            received.append(request)
            return trace_service_pb2.ExportTraceServiceResponse()

    collector = grpc.server(futures.ThreadPoolExecutor(2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Collector(), collector)
    port = collector.add_insecure_port("127.0.0.1:0")
    collector.start()
    try:
        server = serve_factory(env={"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
                                    "OTEL_EXPORTER_OTLP_INSECURE": "true", "OTEL_BSP_SCHEDULE_DELAY": "100",
                                    "OTEL_SERVICE_NAME": "corral-otlp", "NO_PROXY": "*"})
        setup_model(server, tmp_path)
        assert show(server, traceparent=TRACEPARENT).status_code == 200

        def spans():
            out = []
            for request in received:
                for resource_spans in request.resource_spans:
                    attrs = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
                    for scope in resource_spans.scope_spans:
                        out += [(attrs.get("service.name"), s.name, s.trace_id.hex()) for s in scope.spans]
            return [s for s in out if s[2] == TRACE_ID]

        found = wait_until(spans, timeout=15)
        assert ("corral-otlp", "/ollama.v1.Ollama/Show", TRACE_ID) in found, found
    finally:
        collector.stop(0)
