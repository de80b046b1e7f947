"""The production WSGI server for the shim (cheroot, CherryPy's server).

Chosen because it writes each yielded chunk at once with chunked encoding (NDJSON progress reaches the
client line by line), closes the response iterable when the client goes away (which cancels the gRPC
call), sets TCP_NODELAY (no 40 ms Nagle/delayed-ACK stalls on kept-open connections) and streams request
bodies (blob uploads are never buffered whole).
"""

import threading

from cheroot import wsgi


def create_http_server(app, host: str, port: int, threads: int = 64) -> wsgi.Server:
    """A bound (not yet serving) server; port 0 picks a free port, read back from bind_addr."""
    server = wsgi.Server((host, port), app, numthreads=threads, server_name="corral")
    server.nodelay = True
    server.prepare()
    return server


def serve_in_thread(server: wsgi.Server) -> threading.Thread:
    thread = threading.Thread(target=server.serve, name="corral-http", daemon=True)
    thread.start()
    return thread
