"""Graceful drain, as an orchestrator expects it on SIGTERM.

`Drain.begin()` flips the health service to NOT_SERVING for every service name at once (grpc's
enter_graceful_shutdown, which also ignores later set() calls), and from then on DrainInterceptor
refuses new calls with UNAVAILABLE "server is shutting down" (the REST shim answers 503) while the calls
in flight run on. `wait(seconds)` returns when none is left or the time is up; then `corral serve`
stops its listeners and exits 0. The health service itself keeps answering (NOT_SERVING) until the very
end, so a load balancer sees the flip rather than a dead port.
"""

from __future__ import annotations

import threading
import time

import grpc

from corral.service.auth import HEALTH_PREFIX, refuse

SHUTTING_DOWN = "server is shutting down"


class Drain:
    def __init__(self, health_servicer=None):
        self.health = health_servicer
        self.draining = False
        self._active = 0
        self._idle = threading.Condition()

    @property
    def active(self) -> int:
        return self._active

    def enter(self) -> None:
        with self._idle:
            self._active += 1

    def leave(self) -> None:
        with self._idle:
            self._active -= 1
            if self._active == 0:
                self._idle.notify_all()

    def begin(self) -> None:
        """Not serving from now on: health says so and new calls are refused."""
        self.draining = True
        if self.health is not None:
            self.health.enter_graceful_shutdown()

    def wait(self, seconds: float) -> bool:
        """Waits until no call is in flight or `seconds` pass; True when none is left."""
        deadline = time.monotonic() + seconds
        with self._idle:
            while self._active:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
        return True


class DrainInterceptor(grpc.ServerInterceptor):
    """Counts the calls in flight; refuses new ones (health excepted) once the drain began."""

    def __init__(self, drain: Drain):
        self.drain = drain
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method.startswith(HEALTH_PREFIX):
            return handler
        if self.drain.draining:
            return refuse(handler, grpc.StatusCode.UNAVAILABLE, SHUTTING_DOWN)
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self._count(handler)
        if len(self._wrapped) < 256:  # the server's own methods; never grows with what clients send
            self._wrapped[method] = (handler, wrapped)
        return wrapped

    def _count(self, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        enter, leave = self.drain.enter, self.drain.leave
        if handler.response_streaming:
            field = "stream_stream" if handler.request_streaming else "unary_stream"
            behavior = getattr(handler, field)

            def stream(request, context):
                enter()
                try:
                    yield from behavior(request, context)
                finally:
                    leave()

            return handler._replace(**{field: stream})  # type: ignore[attr-defined]

        field = "stream_unary" if handler.request_streaming else "unary_unary"
        behavior = getattr(handler, field)

        def unary(request, context):
            enter()
            try:
                return behavior(request, context)
            finally:
                leave()

        return handler._replace(**{field: unary})  # type: ignore[attr-defined]
