"""Request ids, trace context in log lines, JSON logs, and optional OpenTelemetry tracing.

A REST request's `x-request-id` (one is made when it has none) and W3C `traceparent` travel on the shim's
gRPC call as metadata (rest_shim/tracing.py, rest_shim/client.py); on the service side
RequestContextInterceptor puts them in context variables for the call, and ContextFilter writes them into
every log line made in that context (`request_id`, `trace_id`). A call that carries an id also gets one
access line when it ends. `CORRAL_LOG_FORMAT=json` makes each log line one JSON object.

Tracing is off unless OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_TRACES_EXPORTER is set (store/config.py): then
`setup_tracing` installs the OpenTelemetry SDK (OTLP exporter, or `console` for stdout) and the gRPC server
instrumentation, whose spans continue the caller's trace; the SDK reads its other OTEL_* variables itself.
This module is a leaf (no server imports), so the shim can share its context variables.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
import time
import uuid

import grpc

from corral.store import config

REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("corral_request_id", default="")
TRACEPARENT: contextvars.ContextVar[str] = contextvars.ContextVar("corral_traceparent", default="")

_ID = re.compile(r"[!-~]{1,128}")  # printable ASCII, no spaces: safe in a header, metadata and a log line
_TRACEPARENT = re.compile(r"[0-9a-f]{2}-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_tracing = False


def clean_id(value: str | None) -> str:
    """A request id as given if it is 1-128 printable ASCII characters without spaces, else ""."""
    return value if value and _ID.fullmatch(value) else ""


def new_id() -> str:
    return uuid.uuid4().hex


def tracing() -> bool:
    return _tracing


def trace_ids() -> tuple[str, str]:
    """(trace id, span id) of the current OpenTelemetry span, else of the call's traceparent, else ("", "")."""
    if _tracing:
        from opentelemetry import trace

        ctx = trace.get_current_span().get_span_context()
        if ctx.is_valid:
            return format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")
    m = _TRACEPARENT.fullmatch(TRACEPARENT.get())
    return (m.group(1), m.group(2)) if m else ("", "")


class ContextFilter(logging.Filter):
    """Adds request_id, trace_id and span_id ("" outside a request) to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = REQUEST_ID.get()
        record.trace_id, record.span_id = trace_ids()
        return True


class TextFormatter(logging.Formatter):
    """The usual line, plus ` request_id=… trace_id=…` inside a request."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        rid, tid = getattr(record, "request_id", ""), getattr(record, "trace_id", "")
        if rid:
            line += f" request_id={rid}"
        if tid:
            line += f" trace_id={tid}"
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and request_id/trace_id/span_id/exception
    when there are any."""

    def format(self, record: logging.LogRecord) -> str:
        out = {"time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
               "level": record.levelname, "logger": record.name, "message": record.getMessage()}
        for key in ("request_id", "trace_id", "span_id"):
            value = getattr(record, key, "")
            if value:
                out[key] = value
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def configure_logging(level: int) -> None:
    """Root logging to stderr in CORRAL_LOG_FORMAT, with the request context filter."""
    try:
        kind = config.log_format()
    except config.ConfigError:
        kind = "text"  # check_all() reports the bad value
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(ContextFilter())
    if kind == "json":
        formatter: logging.Formatter = JsonFormatter()
    else:
        formatter = TextFormatter(TEXT_FORMAT)
    handler.setFormatter(formatter)
    logging.basicConfig(level=level, handlers=[handler], force=True)


def setup_tracing() -> bool:
    """Installs the OpenTelemetry SDK and the gRPC server instrumentation when the OTEL variables ask for
    tracing (before the gRPC server is created). Returns whether tracing is on."""
    global _tracing
    if _tracing or not config.otel_enabled():
        return _tracing
    from opentelemetry import trace
    from opentelemetry.instrumentation.grpc import GrpcInstrumentorServer
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SimpleSpanProcessor

    resource = Resource.create()  # OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": "corral"}))
    provider = TracerProvider(resource=resource)
    for name in config.otel_exporters():
        if name == "console":
            provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
        elif config.raw("OTEL_EXPORTER_OTLP_PROTOCOL").startswith("http"):
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

            provider.add_span_processor(BatchSpanProcessor(HttpExporter()))
        else:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    GrpcInstrumentorServer().instrument()
    _tracing = True
    return True


def shutdown_tracing() -> None:
    """Flushes the spans still buffered (at exit)."""
    if _tracing:
        from opentelemetry import trace

        shutdown = getattr(trace.get_tracer_provider(), "shutdown", None)
        if shutdown is not None:
            shutdown()


log = logging.getLogger("corral.access")


def _reset(tokens) -> None:
    try:
        TRACEPARENT.reset(tokens[1])
        REQUEST_ID.reset(tokens[0])
    except ValueError:  # a stream closed from another context (garbage collection): nothing to restore
        pass


class RequestContextInterceptor(grpc.ServerInterceptor):
    """For a call with `x-request-id` or `traceparent` metadata: both in context while its handler runs,
    and one access line (method, status, milliseconds) when it ends. Other calls pass untouched."""

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        rid = parent = ""
        for key, value in handler_call_details.invocation_metadata or ():
            if key == "x-request-id":
                rid = clean_id(value)
            elif key == "traceparent":
                parent = value if isinstance(value, str) else ""
        if not rid and not parent:
            return handler
        method = handler_call_details.method
        streaming = handler.response_streaming
        field = ("stream_" if handler.request_streaming else "unary_") + ("stream" if streaming else "unary")
        behavior = getattr(handler, field)

        def finish(context, begun: float) -> None:
            code = context.code() if hasattr(context, "code") else None
            name = code.name if isinstance(code, grpc.StatusCode) else "OK"
            log.info("grpc %s %s %.1fms", method, name, (time.perf_counter() - begun) * 1000)

        if streaming:
            def stream(request, context):
                tokens = REQUEST_ID.set(rid), TRACEPARENT.set(parent)
                begun = time.perf_counter()
                try:
                    yield from behavior(request, context)
                finally:
                    finish(context, begun)
                    _reset(tokens)

            return handler._replace(**{field: stream})

        def unary(request, context):
            tokens = REQUEST_ID.set(rid), TRACEPARENT.set(parent)
            begun = time.perf_counter()
            try:
                return behavior(request, context)
            finally:
                finish(context, begun)
                _reset(tokens)

        return handler._replace(**{field: unary})
