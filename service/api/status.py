"""The one place where domain errors become gRPC statuses, and where a call's cancellation becomes an Event.

Servicer methods raise store.errors.CorralError subclasses carrying the exact Ollama text; the
`handle_errors` decorator aborts the call with the matching code and that text as the status message,
for unary methods and for streaming generators alike, so no method repeats try/except blocks.
"""

import functools
import inspect
import logging
import threading

import grpc

from corral.store.errors import CorralError

log = logging.getLogger("corral.service")


# gRPC carries the status message in a header (grpc-message, percent-encoded: up to three bytes a
# character), and headers past the metadata limit (8 KiB by default) kill the whole stream ("Stream
# removed"). An error that echoes what the caller sent (a 1 MiB model name) is cut to this many characters.
MAX_MESSAGE_CHARS = 1024
# A cancellation this close to the call's deadline is the deadline (cancel_event's timer fires at it; timers
# and the clock differ by milliseconds).
DEADLINE_SLACK = 0.05


def capped(message: str) -> str:
    """An error text short enough for gRPC's status header."""
    if len(message) <= MAX_MESSAGE_CHARS:
        return message
    suffix = f"... ({len(message)} characters)"
    return message[: MAX_MESSAGE_CHARS - len(suffix)] + suffix


def _deadline_passed(context) -> bool:
    remaining = context.time_remaining()
    return remaining is not None and remaining < DEADLINE_SLACK


def _abort(context, exc: BaseException):
    if isinstance(exc, grpc.RpcError) and not context.is_active():
        # The call already ended under the method: a request stream it was reading was cancelled, or gRPC
        # itself refused bytes that do not parse ("Exception deserializing request!") and set the status.
        # Aborting again would log a bogus internal error and, on a bidirectional stream, leave the call
        # open in gRPC's core (server.stop() then never completes): gRPC ends it as it does any handler
        # whose request iterator failed.
        raise exc
    if isinstance(exc, CorralError):
        if exc.code == "CANCELLED" and _deadline_passed(context):
            # cancel_event's timer fired: the caller's deadline, which its status must name (our status can
            # reach the client before its own timer says DEADLINE_EXCEEDED)
            context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline exceeded")
        context.abort(grpc.StatusCode[exc.code], capped(exc.message))
    log.exception("internal error")
    context.abort(grpc.StatusCode.INTERNAL, capped(str(exc) or exc.__class__.__name__))


def handle_errors(method):
    """Turn CorralError (and anything unexpected) raised by a servicer method into a gRPC status.

    Methods raise; they never call context.abort themselves (a second abort would overwrite the code).
    """
    if inspect.isgeneratorfunction(method):

        @functools.wraps(method)
        def stream(self, request, context):
            try:
                yield from method(self, request, context)
            except Exception as exc:
                _abort(context, exc)

        return stream

    @functools.wraps(method)
    def unary(self, request, context):
        try:
            return method(self, request, context)
        except Exception as exc:
            _abort(context, exc)

    return unary


class CallEvent(threading.Event):
    """cancel_event's Event; call_active() tells whether the call can still get a status from the handler
    (False once gRPC itself ended it, e.g. after request bytes that do not parse: see embed_stream.py)."""

    def __init__(self, context):
        super().__init__()
        self.call_active = context.is_active


def cancel_event(context) -> CallEvent:
    """An Event set when the client cancels, disconnects or its deadline passes.

    Long work (downloads, generation) polls or waits on it, so cancellation reaches the work itself and
    not only the response stream.
    """
    event = CallEvent(context)
    context.add_callback(event.set)
    remaining = context.time_remaining()
    if remaining is not None and remaining < 1e9:
        timer = threading.Timer(max(remaining, 0), event.set)
        timer.daemon = True
        timer.start()
        context.add_callback(timer.cancel)
    if not context.is_active():
        event.set()
    return event
