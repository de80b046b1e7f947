"""The production WSGI server for the shim (cheroot, CherryPy's server).

Chosen because it writes each yielded chunk at once with chunked encoding (NDJSON progress reaches the
client line by line), closes the response iterable when the client goes away (which cancels the gRPC
call), sets TCP_NODELAY (no 40 ms Nagle/delayed-ACK stalls on kept-open connections) and streams request
bodies (blob uploads are never buffered whole).
"""

import threading
from http import HTTPStatus

from cheroot import wsgi


def go_reason_phrases(app):
    """Werkzeug writes reason phrases in capitals ("404 NOT FOUND"); Go and most servers write the
    standard phrase ("404 Not Found"), which is what a user comparing with Ollama sees."""

    def wrapped(environ, start_response):
        def start(status, headers, exc_info=None):
            code = status.split(" ", 1)[0]
            try:
                status = f"{code} {HTTPStatus(int(code)).phrase}"
            except ValueError:
                pass  # 499 and other non-standard codes keep their text
            return start_response(status, headers, exc_info)

        return app(environ, start)

    return wrapped


def create_http_server(app, host: str, port: int, threads: int = 64) -> wsgi.Server:
    """A bound (not yet serving) server; port 0 picks a free port, read back from bind_addr."""
    server = wsgi.Server((host, port), go_reason_phrases(app), numthreads=threads, server_name="corral")
    server.nodelay = True
    server.prepare()
    return server


def serve_in_thread(server: wsgi.Server) -> threading.Thread:
    thread = threading.Thread(target=server.serve, name="corral-http", daemon=True)
    thread.start()
    return thread
