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


def _abort(context, exc: BaseException):
    if isinstance(exc, CorralError):
        context.abort(grpc.StatusCode[exc.code], exc.message)
    log.exception("internal error")
    context.abort(grpc.StatusCode.INTERNAL, str(exc) or exc.__class__.__name__)


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


def cancel_event(context) -> threading.Event:
    """An Event set when the client cancels, disconnects or its deadline passes.

    Long work (downloads, generation) polls or waits on it, so cancellation reaches the work itself and
    not only the response stream.
    """
    event = threading.Event()
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
