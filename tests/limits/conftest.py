"""A REST shim factory for the limit tests: each shim reads its HttpLimits from the environment when it is
created, so a test sets small limits (few threads, short timeouts) first and the shim runs in seconds."""

from dataclasses import dataclass

import pytest


@dataclass
class Http:
    url: str
    port: int
    server: object  # rest_shim.http.HTTPServer


@pytest.fixture
def make_shim(server, monkeypatch):
    from corral.rest_shim.app import create_app
    from corral.rest_shim.http import create_http_server, serve_in_thread

    made = []

    def make(threads: int = 4, **env: str) -> Http:
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        app = create_app(server.target)
        http = create_http_server(app, "127.0.0.1", 0, threads=threads)
        serve_in_thread(http)
        made.append((http, app))
        port = http.bind_addr[1]
        return Http(f"http://127.0.0.1:{port}", port, http)

    try:
        yield make
    finally:
        for http, app in made:
            http.stop()
            app.extensions["corral"].close()
