"""A gRPC client interceptor that adds metadata to every call: the base of the REST shim's (keys, model
affinity, request ids: rest_shim/client.py) and the CLI's (its key: service/cli/client.py).

Why a base: grpc's client interceptors are four interfaces, one per call shape, and the call details are
an immutable tuple to rebuild; subclasses only say which entries a call gets. Client-side only (no
servicer imports), so the shim may use it and still reach the service only through its channel.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import grpc


class _CallDetails(NamedTuple):
    method: str
    timeout: float | None
    metadata: Any
    credentials: Any
    wait_for_ready: Any
    compression: Any


class MetadataInterceptor(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor,
                          grpc.StreamUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
    def entries(self, message: Any) -> list[tuple[str, str]]:
        """The entries to add to a call; `message` is its request (None for a client-streaming call)."""
        raise NotImplementedError

    def _details(self, details, message: Any = None):
        extra = self.entries(message)
        if not extra:
            return details
        return _CallDetails(details.method, details.timeout, [*(details.metadata or ()), *extra],
                            details.credentials, details.wait_for_ready, details.compression)

    def intercept_unary_unary(self, continuation, details, request):
        return continuation(self._details(details, request), request)

    def intercept_unary_stream(self, continuation, details, request):
        return continuation(self._details(details, request), request)

    def intercept_stream_unary(self, continuation, details, requests):
        return continuation(self._details(details), requests)

    def intercept_stream_stream(self, continuation, details, requests):
        return continuation(self._details(details), requests)
