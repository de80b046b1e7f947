"""Bearer-key authentication of gRPC calls, and the refusal handler the server's gates share.

With CORRAL_API_KEYS / CORRAL_API_KEYS_FILE set (store/config.py), every call must carry the metadata
entry `authorization: Bearer <key>` with one of the keys, else it ends with UNAUTHENTICATED "unauthorized"
before the servicer sees it (the check itself: store/keys.py). The health
service stays open (orchestrators probe without keys); the REST shim checks its own requests the same way
(rest_shim/auth.py) and forwards the caller's key on its gRPC hop.
"""

from __future__ import annotations

import grpc

from corral.store.keys import UNAUTHORIZED, Keys

HEALTH_PREFIX = "/grpc.health.v1.Health/"


def refuse(handler: grpc.RpcMethodHandler, code: grpc.StatusCode, text: str) -> grpc.RpcMethodHandler:
    """A handler of the same shape as `handler` that ends the call at once with `code` and `text`."""

    def unary(request, context):
        context.abort(code, text)

    def stream(request, context):
        context.abort(code, text)
        yield  # unreachable: abort raises; makes this a generator as a streaming handler must be

    if handler.response_streaming:
        field = "stream_stream" if handler.request_streaming else "unary_stream"
        behavior = stream
    else:
        field = "stream_unary" if handler.request_streaming else "unary_unary"
        behavior = unary
    fields = dict.fromkeys(("unary_unary", "unary_stream", "stream_unary", "stream_stream"))
    fields[field] = behavior
    return handler._replace(**fields)  # type: ignore[attr-defined]


class AuthInterceptor(grpc.ServerInterceptor):
    """UNAUTHENTICATED for a call without a valid `authorization: Bearer <key>` (health excepted)."""

    def __init__(self, keys: Keys):
        self.keys = keys

    def intercept_service(self, continuation, handler_call_details):
        method = handler_call_details.method
        if method.startswith(HEALTH_PREFIX):
            return continuation(handler_call_details)
        header = None
        for key, value in handler_call_details.invocation_metadata or ():
            if key == "authorization":
                header = value
                break
        handler = continuation(handler_call_details)
        if handler is None or self.keys.accepts(header):
            return handler
        return refuse(handler, grpc.StatusCode.UNAUTHENTICATED, UNAUTHORIZED)
