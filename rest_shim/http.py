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
sizes `threads` from store.config.Capacity, as it sizes the gRPC server. The same gate drains: on SIGTERM
`corral serve` closes it (new requests get 503) and waits for the requests in progress.
"""

import threading
import time
from http import HTTPStatus

from cheroot import wsgi

from corral.rest_shim.errors import BUSY
from corral.rest_shim.jsonenc import dumpb
from corral.rest_shim.metrics import HTTP_REFUSED
from corral.rest_shim.streaming import OnClose

SPARE_THREADS = 8  # workers that only ever answer 503 while `threads` requests are in progress
_BUSY_BODY = dumpb({"error": BUSY})
_SHUTTING_DOWN_BODY = dumpb({"error": "server is shutting down"})
_REFUSED_BUSY, _REFUSED_DRAINING = HTTP_REFUSED.labels("busy"), HTTP_REFUSED.labels("shutting_down")


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


class Gate:
    """Admission and drain for the WSGI app: at most `limit` requests in it at once, the others answered
    503 with Ollama's busy text at once; after close(), every new request gets 503 "server is shutting
    down" while those in progress finish (wait_idle tells when they have)."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit
        self.closed = False
        self._active = 0
        self._lock = threading.Condition()

    def __call__(self, environ, start_response):
        with self._lock:
            refused = _SHUTTING_DOWN_BODY if self.closed else _BUSY_BODY if self._active >= self.limit else None
            if refused is None:
                self._active += 1
        if refused is not None:
            (_REFUSED_DRAINING if refused is _SHUTTING_DOWN_BODY else _REFUSED_BUSY).inc()
            start_response("503 Service Unavailable", [("Content-Type", "application/json; charset=utf-8"),
                                                       ("Content-Length", str(len(refused)))])
            return [refused]
        try:
            body = self.app(environ, start_response)
        except BaseException:
            self._release()
            raise
        return OnClose(body, self._release)

    def _release(self) -> None:
        with self._lock:
            self._active -= 1
            if self._active == 0:
                self._lock.notify_all()

    def close(self) -> None:
        with self._lock:
            self.closed = True

    def wait_idle(self, seconds: float) -> bool:
        """True once no request is in progress; False if `seconds` passed first."""
        deadline = time.monotonic() + seconds
        with self._lock:
            while self._active:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._lock.wait(left)
        return True


def admission(app, limit: int) -> Gate:
    """At most `limit` requests in the app at once; the others get 503 with Ollama's busy text at once."""
    return Gate(app, limit)


class HTTPServer(wsgi.Server):
    """cheroot's server with the Gate in front of the app (admission and drain)."""

    gate: Gate


def create_http_server(app, host: str, port: int, threads: int = 64, tls: tuple[str, str] | None = None
                       ) -> HTTPServer:
    """A bound (not yet serving) server for `threads` requests at once; port 0 picks a free port, read
    back from bind_addr. `tls`: (certificate file, key file) to serve HTTPS. Its Gate is `server.gate`."""
    gate = admission(go_reason_phrases(app), threads)
    server = HTTPServer((host, port), gate, numthreads=threads + SPARE_THREADS, server_name="corral")
    server.gate = gate
    server.nodelay = True
    if tls is not None:
        from cheroot.ssl.builtin import BuiltinSSLAdapter

        server.ssl_adapter = BuiltinSSLAdapter(*tls)
    server.prepare()
    return server


def serve_in_thread(server: wsgi.Server) -> threading.Thread:
    thread = threading.Thread(target=server.serve, name="corral-http", daemon=True)
    thread.start()
    return thread
