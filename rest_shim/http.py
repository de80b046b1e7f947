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

Limits (store.config.HttpLimits): a listen backlog sized for bursts (cheroot's default of 5 made 64
clients connecting at once see timeouts and resets), a maximum size of the request head (414/431), and
slow or malformed clients handled by rest_shim/reading.py: a request waits in the selector until it has
arrived, reads in a worker are timed, chunked bodies are decoded strictly, and every error cheroot
answers itself is a JSON error that closes the connection.
"""

import threading
import time
from http import HTTPStatus
from pathlib import Path

from cheroot import errors as cheroot_errors
from cheroot import server as cheroot_server
from cheroot import wsgi
from cheroot.makefile import MakeFile

from corral.rest_shim import reading
from corral.rest_shim.errors import BUSY
from corral.rest_shim.jsonenc import dumpb
from corral.rest_shim.metrics import HTTP_REFUSED
from corral.rest_shim.streaming import OnClose
from corral.store import config

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


def answer_body_failures(app):
    """A request whose body could not be read (malformed chunks, an early end, too slow) is answered with
    its reader's failure, whatever the route made of the exception: a route that streams the body on
    (a blob upload) sees it as a failed gRPC call, which alone would be a 500. A route that answered
    with the failure's status already (body.py's readers; the /v1 routes in OpenAI's error shape) keeps
    its answer."""

    def wrapped(environ, start_response):
        replaced: list[bytes] = []

        def start(status, headers, exc_info=None):
            failure = reading.body_failure(environ.get("wsgi.input"))
            if failure is None or str(status)[:3] == str(failure[0]):
                return start_response(status, headers, exc_info)
            code, text = failure
            body = dumpb({"error": text})
            replaced.append(body)
            return start_response(f"{code} {HTTPStatus(code).phrase}", _json_headers(body), exc_info)

        result = app(environ, start)
        if not replaced:
            return result
        close = getattr(result, "close", None)
        if close is not None:
            close()
        return replaced

    return wrapped


def _json_headers(body: bytes) -> list[tuple[str, str]]:
    return [("Content-Type", "application/json; charset=utf-8"), ("Content-Length", str(len(body)))]


DRAIN_BYTES = 256 * 1024  # an unread body up to this is read and dropped to keep the connection; past it, closed


class LimitedRequest(cheroot_server.HTTPRequest):
    """cheroot's request with Corral's limits: head-size errors as 414/431, strict body readers
    (rest_shim/reading.py), a bounded drain of a body the app left unread (cheroot reads it whole, into
    memory: a Content-Length of 30 GB on a 401 would have been read), and JSON error answers."""

    def parse_request(self):
        limit = self.server.max_request_header_size
        self.rfile = cheroot_server.SizeCheckWrapper(self.conn.rfile, limit)
        try:
            if not self.read_request_line():
                return
        except cheroot_errors.MaxSizeExceeded:
            self.simple_response("414 URI Too Long", f"request line too long (the limit is {limit} bytes for the "
                                                     "request line and headers; CORRAL_MAX_HEADER_BYTES)")
            return
        try:
            if not self.read_request_headers():
                return
        except cheroot_errors.MaxSizeExceeded:
            self.simple_response("431 Request Header Fields Too Large",
                                 f"request headers too large (the limit is {limit} bytes; CORRAL_MAX_HEADER_BYTES)")
            return
        self.ready = True

    def respond(self):
        if self.chunked_read:
            self.rfile = reading.ChunkedBody(self.conn.rfile)
        else:
            length = self.inheaders.get(b"Content-Length", b"0").strip()
            if not length.isdigit():
                self.simple_response("400 Bad Request", "invalid Content-Length")
                return
            self.rfile = reading.KnownLengthBody(self.conn.rfile, int(length))
        self.server.gateway(self).respond()
        if self.ready:
            self.ensure_headers_sent()
        if self.chunked_write:
            self.conn.wfile.write(b"0\r\n\r\n")

    def send_headers(self):
        body = self.rfile
        if getattr(body, "failure", None) is not None or (self.chunked_read and not getattr(body, "closed", True)):
            self.close_connection = True  # what follows on the connection is not a request's start
        elif not self.close_connection and getattr(body, "remaining", 0):
            self.close_connection = not self._drain(body)
        super().send_headers()

    @staticmethod
    def _drain(body) -> bool:
        """Reads and drops an unread body of at most DRAIN_BYTES; False when it is larger or unreadable."""
        if body.remaining > DRAIN_BYTES:
            return False
        try:
            while body.remaining:
                body.read(min(body.remaining, 1 << 16))
        except Exception:
            return False
        return True

    def simple_response(self, status, msg=""):
        """cheroot's own answers (bad request line, head too large, timeouts) as Ollama-style JSON errors;
        an error closes the connection, whose stream is no longer known to be at a request's start."""
        status = str(status)
        code = int(status[:3])
        if not msg:
            limits = self.server.limits
            msg = reading.timeout_text(limits.read_timeout, limits.min_rate) if code == 408 else status[4:].lower()
        body = dumpb({"error": msg})
        head = [f"{self.server.protocol} {status}", "Content-Type: application/json; charset=utf-8",
                f"Content-Length: {len(body)}"]
        if code >= 400:
            self.close_connection = True
            head.append("Connection: close")
        try:
            self.conn.wfile.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
        except OSError:
            pass  # the client is gone


class LimitedConnection(cheroot_server.HTTPConnection):
    """A connection whose reads are timed by a ReadClock and whose requests are LimitedRequests.
    `parked_since`: when the current request began waiting in the selector (HTTPServer.process_conn)."""

    RequestHandlerClass = LimitedRequest

    def __init__(self, server, sock, makefile=MakeFile):
        self.clock = reading.ReadClock(server.limits.read_timeout, server.limits.min_rate)
        self.parked_since: float | None = None

        def files(sock, mode="r", bufsize=-1):
            if "r" in mode:
                return reading.DeadlineReader(sock, bufsize, self.clock)
            return makefile(sock, mode, bufsize)

        super().__init__(server, sock, files)

    def communicate(self):
        parked = 0.0 if self.parked_since is None else time.monotonic() - self.parked_since
        self.parked_since = None
        self.clock.reset(parked)  # time spent waiting in the selector counts too
        return super().communicate()


class HTTPServer(wsgi.Server):
    """cheroot's server with the Gate in front of the app (admission and drain), and connections that
    wait in the selector until their request has arrived."""

    gate: Gate
    limits: config.HttpLimits
    ConnectionClass = LimitedConnection

    def process_conn(self, conn):
        """Hands a connection to a worker once its request has arrived (rest_shim/reading.py). Over TLS
        the bytes cannot be taken without the handshake's state: a worker reads them, under the ReadClock
        only; likewise when cheroot's reader already holds bytes (a pipelined request)."""
        if self.ssl_adapter is None and isinstance(conn, LimitedConnection) and not conn.rfile.buffered() \
                and self._parked(conn):
            return
        super().process_conn(conn)

    def _parked(self, conn: LimitedConnection) -> bool:
        """True when the connection was put back in the selector to wait for more of its request, or
        answered 408 and closed because it waited too long."""
        timed = conn.rfile.timed
        try:
            taken = timed.take_available(reading.PARK_BYTES)
        except OSError:
            return False  # reset: the worker finds out and closes it
        timed.incomplete = taken != 0 and timed.waiting()
        if not timed.incomplete:
            return False  # it is all here, or the client closed (the worker reads what came, then the end)
        now = time.monotonic()
        if conn.parked_since is None:
            if timed.pending:  # from the request's first byte; a silent connection is cheroot's (closed when idle)
                conn.parked_since = now
        elif now - conn.parked_since >= self.limits.read_timeout:
            self._time_out(conn)
            return True
        self.put_conn(conn)
        return True

    def _time_out(self, conn: LimitedConnection) -> None:
        """408 without a worker. What arrived was taken off the socket already (and what may have come
        since is taken now), so the close sends FIN, not RST, which could destroy the answer unread."""
        timed = conn.rfile.timed
        try:
            timed.take_available(len(timed.pending) + reading.PARK_BYTES)
        except OSError:
            pass
        timed.pending.clear()
        body = dumpb({"error": reading.timeout_text(self.limits.read_timeout, self.limits.min_rate)})
        head = (f"{self.protocol} 408 Request Timeout\r\nContent-Type: application/json; charset=utf-8\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n")
        try:
            conn.socket.settimeout(0.0)  # never block the selector's thread: a 150-byte answer fits any buffer
            conn.socket.send(head.encode("latin-1") + body)
        except OSError:
            pass
        conn.close()


def listen_backlog(wanted: int) -> int:
    """`wanted`, at most the kernel's net.core.somaxconn (which caps it silently anyway: said here so the
    server's attribute tells the truth)."""
    try:
        cap = int(Path("/proc/sys/net/core/somaxconn").read_text())
    except (OSError, ValueError):
        return wanted
    return min(wanted, cap) if cap > 0 else wanted


def create_http_server(app, host: str, port: int, threads: int = 64, tls: tuple[str, str] | None = None
                       ) -> HTTPServer:
    """A bound (not yet serving) server for `threads` requests at once; port 0 picks a free port, read
    back from bind_addr. `tls`: (certificate file, key file) to serve HTTPS. Its Gate is `server.gate`;
    its limits (store.config.HttpLimits) are read from the environment now."""
    limits = config.HttpLimits.from_env()
    gate = admission(go_reason_phrases(answer_body_failures(app)), threads)
    server = HTTPServer((host, port), gate, numthreads=threads + SPARE_THREADS, server_name="corral",
                        request_queue_size=listen_backlog(limits.listen_backlog))
    server.gate = gate
    server.limits = limits
    server.max_request_header_size = limits.max_header_bytes
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
