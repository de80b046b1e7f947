"""NDJSON streams over a server-streaming gRPC call.

HTTP needs its status before the body while gRPC sends its status last, so the first message is read
before answering: an error before it becomes an HTTP status with a JSON error body, an error after it
becomes a final {"error": ...} line. When the HTTP client goes away the WSGI server closes the body
generator, and closing it cancels the gRPC call, which stops the work behind it; while nothing is
written yet (before the first message, or all along with "stream": false) disconnect.py notices it.
"""

import grpc
from flask import Response, request

from corral.rest_shim.disconnect import Watch
from corral.rest_shim.errors import rpc_error_response
from corral.rest_shim.jsonenc import dumpb

NDJSON = "application/x-ndjson"


def _line(obj: dict) -> bytes:
    return dumpb(obj) + b"\n"


def json_response(obj, status: int = 200) -> Response:
    return json_bytes_response(dumpb(obj), status)


def json_bytes_response(body: bytes, status: int = 200) -> Response:
    return Response(body, status=status, content_type="application/json; charset=utf-8")


def ndjson(call, to_json, stream: bool = True, merge=None) -> Response:
    """Answer with the call's messages as NDJSON, or as one JSON object when stream is False.

    merge(list_of_dicts) -> dict builds the single object; by default it is the last message.
    """
    messages = iter(call)
    watch = Watch(request.environ, call.cancel)  # until the body ends: a client gone cancels the call
    handed = False  # the body stops the watch once it runs
    try:
        first = next(messages, None)
        if not stream:
            lines = [] if first is None else [to_json(first)]
            lines.extend(to_json(m) for m in messages)
            return json_response(merge(lines) if merge else (lines[-1] if lines else {}))
        handed = True
    except grpc.RpcError as error:
        return rpc_error_response(error)
    finally:
        if not handed:
            watch.stop()
        if not stream:
            call.cancel()

    def body():
        try:
            if first is not None:
                yield _line(to_json(first))
            for m in messages:
                yield _line(to_json(m))
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.CANCELLED:
                yield _line({"error": error.details() or error.code().name.lower()})
        finally:
            watch.stop()
            call.cancel()

    return Response(body(), status=200, content_type=NDJSON)


class OnClose:
    """A WSGI response body that calls `callback` once when the server closes it (sent whole, or the
    client went away), after closing the body itself: a stream holds its admission slot, and is timed,
    for as long as it runs."""

    __slots__ = ("body", "callback")

    def __init__(self, body, callback):
        self.body, self.callback = body, callback

    def __iter__(self):
        return iter(self.body)

    def close(self):
        try:
            close = getattr(self.body, "close", None)
            if close is not None:
                close()
        finally:
            callback, self.callback = self.callback, None
            if callback is not None:
                callback()
