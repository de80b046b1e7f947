"""Request ids and trace context on the REST side (service/observability.py has the why).

Each request gets the caller's `x-request-id` (or a new one when it sent none or an unusable one), echoed
as the `x-request-id` response header, and its W3C `traceparent`/`tracestate`; both are in context variables
while the request runs, so the shim's gRPC client interceptor (rest_shim/client.py) puts them on the call as
metadata and log lines carry them. With tracing on, the request is a server span continuing the caller's
trace, and the call carries that span's traceparent instead.
"""

from __future__ import annotations

from flask import Flask, g, request

from corral.service import observability
from corral.service.observability import REQUEST_ID, TRACEPARENT, clean_id, new_id


def outgoing_metadata() -> list[tuple[str, str]]:
    """The request context as gRPC metadata for a call made while handling a REST request."""
    rid = REQUEST_ID.get()
    if not rid:
        return []
    metadata = [("x-request-id", rid)]
    if observability.tracing():
        from opentelemetry import propagate

        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        metadata += [(k, v) for k, v in carrier.items() if k in ("traceparent", "tracestate")]
    else:
        parent = TRACEPARENT.get()
        if parent:
            metadata.append(("traceparent", parent))
            state = request.headers.get("tracestate")
            if state:
                metadata.append(("tracestate", state))
    return metadata


def install(app: Flask) -> None:
    @app.before_request
    def _begin():
        rid = clean_id(request.headers.get("x-request-id")) or new_id()
        parent = request.headers.get("traceparent", "")
        g.corral_context = (rid, REQUEST_ID.set(rid), TRACEPARENT.set(parent if parent.isascii() else ""))
        if observability.tracing():
            from opentelemetry import context, propagate, trace

            span = trace.get_tracer("corral.rest_shim").start_span(
                f"{request.method} {request.url_rule.rule if request.url_rule else 'unmatched'}",
                context=propagate.extract({k.lower(): v for k, v in request.headers.items()}),
                kind=trace.SpanKind.SERVER)
            g.corral_span = (span, context.attach(trace.set_span_in_context(span)))

    @app.after_request
    def _echo(response):
        saved = g.get("corral_context")
        if saved is not None:
            response.headers["x-request-id"] = saved[0]
        return response

    @app.teardown_request
    def _end(_exc):
        spanned = g.pop("corral_span", None)
        if spanned is not None:
            from opentelemetry import context

            spanned[0].end()
            try:
                context.detach(spanned[1])
            except ValueError:
                pass
        saved = g.pop("corral_context", None)
        if saved is not None:
            try:
                TRACEPARENT.reset(saved[2])
                REQUEST_ID.reset(saved[1])
            except ValueError:
                pass
