"""The production WSGI server for the shim (cheroot, CherryPy's server), with admission control.

Chosen because it writes each yielded chunk at once with chunked encoding (NDJSON progress reaches the
client line by line), closes the response iterable when the client goes away (which cancels the gRPC
call), sets TCP_NODELAY (no 40 ms Nagle/delayed-ACK stalls on kept-open connections) and streams request
bodies (blob uploads are never buffered whole). Idle kept-open connections wait in its selector, not in a
worker thread.

Admission: cheroot has a fixed pool of worker threads and an unbounded queue of connections waiting for
one, so past the pool's size a request would wait for an unknown time. Instead `threads` requests are
served at once and a few spare threads answer the rest at once with Ollama's 503 "server busy" (what the
scheduler answers past OLLAMA_MAX_QUEUE and the shim answers for gRPC's own refusal); `corral serve`
sizes `threads` from store.config.Capacity, as it sizes the gRPC server.
"""

import threading
from http import HTTPStatus

from cheroot import wsgi

from corral.rest_shim.errors import BUSY
from corral.rest_shim.jsonenc import dumpb

SPARE_THREADS = 8  # workers that only ever answer 503 while `threads` requests are in progress
_BUSY_BODY = dumpb({"error": BUSY})


def go_reason_phrases(app):
    """Werkzeug writes reason phrases in capitals ("404 NOT FOUND"); Go and most servers write the
    standard phrase ("404 Not Found"), which is what a user comparing with Ollama sees."""
    phrases = {status.value: f"{status.value} {status.phrase}" for status in HTTPStatus}

    def wrapped(environ, start_response):
        def start(status, headers, exc_info=None):
            code = status[:3]
            if code.isdigit():
                status = phrases.get(int(code), status)  # 499 and other non-standard codes keep their text
            return start_response(status, headers, exc_info)

        return app(environ, start)

    return wrapped


class _Released:
    """A response body that gives its admission slot back when the server closes it (sent, or the client
    went away), so a stream holds its slot for as long as it runs."""

    __slots__ = ("body", "release")

    def __init__(self, body, release):
        self.body, self.release = body, release

    def __iter__(self):
        return iter(self.body)

    def close(self):
        try:
            close = getattr(self.body, "close", None)
            if close is not None:
                close()
        finally:
            release, self.release = self.release, None
            if release is not None:
                release()


def admission(app, limit: int):
    """At most `limit` requests in the app at once; the others get 503 with Ollama's busy text at once."""
    slots = threading.BoundedSemaphore(limit)

    def gated(environ, start_response):
        if not slots.acquire(blocking=False):
            start_response("503 Service Unavailable", [("Content-Type", "application/json; charset=utf-8"),
                                                       ("Content-Length", str(len(_BUSY_BODY)))])
            return [_BUSY_BODY]
        try:
            body = app(environ, start_response)
        except BaseException:
            slots.release()
            raise
        return _Released(body, slots.release)

    return gated


def create_http_server(app, host: str, port: int, threads: int = 64) -> wsgi.Server:
    """A bound (not yet serving) server for `threads` requests at once; port 0 picks a free port, read
    back from bind_addr."""
    server = wsgi.Server((host, port), admission(go_reason_phrases(app), threads),
                         numthreads=threads + SPARE_THREADS, server_name="corral")
    server.nodelay = True
    server.prepare()
    return server


def serve_in_thread(server: wsgi.Server) -> threading.Thread:
    thread = threading.Thread(target=server.serve, name="corral-http", daemon=True)
    thread.start()
    return thread
