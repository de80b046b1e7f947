"""The one place where domain errors become gRPC statuses, plus small protobuf conversions.

Servicer methods raise store.errors.CorralError subclasses carrying the exact Ollama text; the
`handle_errors` decorator aborts the call with the matching code and that text as the status message,
for unary methods and for streaming generators alike, so no method repeats try/except blocks.
"""

import functools
import inspect
import logging
import math
import threading
import time

import grpc
from google.protobuf import duration_pb2, struct_pb2, timestamp_pb2
from google.protobuf.json_format import MessageToDict, ParseDict

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
            except Exception as exc:  # noqa: BLE001 - the boundary of the service
                _abort(context, exc)

        return stream

    @functools.wraps(method)
    def unary(self, request, context):
        try:
            return method(self, request, context)
        except Exception as exc:  # noqa: BLE001
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


def progress_message(line: dict):
    """A progress dict from the store or the registry client -> ProgressResponse."""
    from corral.protos.ollama.v1 import ollama_pb2 as pb

    return pb.ProgressResponse(
        status=line.get("status", ""),
        digest=line.get("digest", ""),
        total=int(line.get("total") or 0),
        completed=int(line.get("completed") or 0),
    )


def struct_to_dict(struct: struct_pb2.Struct | None) -> dict:
    """Struct -> plain dict, with integral numbers as int (Struct stores every number as a double)."""
    if struct is None:
        return {}
    return _ints(MessageToDict(struct))


def _ints(value):
    if isinstance(value, float) and math.isfinite(value) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, dict):
        return {k: _ints(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_ints(v) for v in value]
    return value


def dict_to_struct(data: dict | None) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    if data:
        ParseDict(data, struct)
    return struct


def duration_to_seconds(message, field: str = "keep_alive") -> float | None:
    """Seconds of an optional Duration field: None when unset, negative meaning 'forever'."""
    if not message.HasField(field):
        return None
    d: duration_pb2.Duration = getattr(message, field)
    return d.seconds + d.nanos / 1e9


def seconds_to_duration(seconds: float) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    whole = math.trunc(seconds)
    d.seconds = int(whole)
    d.nanos = int(round((seconds - whole) * 1e9))
    return d


def timestamp(epoch_seconds: float | None = None) -> timestamp_pb2.Timestamp:
    """A Timestamp for an epoch time (now when None), keeping nanoseconds."""
    ts = timestamp_pb2.Timestamp()
    ns = time.time_ns() if epoch_seconds is None else int(round(epoch_seconds * 1e9))
    ts.seconds, ts.nanos = divmod(ns, 1_000_000_000)
    return ts
