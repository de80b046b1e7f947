"""Shared fixtures: a real gRPC server on port 0 and the real REST shim on a free port in front of it.

Everything runs for real in the test process (store on tmp_path, servicer, channel, HTTP server); the
official `ollama` client talks to the shim over loopback HTTP exactly as a user's program would.
"""

import os
from dataclasses import dataclass
from pathlib import Path

# Tests fork this process (pexpect runs the CLI in a pty) while its gRPC threads are busy; gRPC's fork
# handlers then skip, and the child could inherit a half-copied poller and die before its exec ("epoll_wait
# error: Bad file descriptor", seen once under CI load). Nothing here needs gRPC in a forked child.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

import grpc  # noqa: E402
import pytest

from corral.protos.ollama.v1 import ollama_pb2_grpc as pb_grpc


@dataclass
class Server:
    target: str
    stub: pb_grpc.OllamaStub
    channel: grpc.Channel
    store: object
    servicer: object
    root: Path


@dataclass
class Shim:
    url: str
    server: Server


@pytest.fixture
def store_root(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "models"
    monkeypatch.setenv("OLLAMA_MODELS", str(root))
    return root


@pytest.fixture
def server(store_root):
    from corral.service.server import close_servicer, create_server
    from corral.store.models import ModelStore

    store = ModelStore(store_root)
    grpc_server, servicer, port = create_server(store, "127.0.0.1:0")
    grpc_server.start()
    target = f"127.0.0.1:{port}"
    channel = grpc.insecure_channel(target)
    try:
        yield Server(target, pb_grpc.OllamaStub(channel), channel, store, servicer, store_root)
    finally:
        channel.close()
        grpc_server.stop(grace=None).wait()
        close_servicer(servicer)


@pytest.fixture
def shim(server):
    from corral.rest_shim.app import create_app
    from corral.rest_shim.http import create_http_server, serve_in_thread

    app = create_app(server.target)
    http = create_http_server(app, "127.0.0.1", 0, threads=16)
    serve_in_thread(http)
    try:
        yield Shim(f"http://127.0.0.1:{http.bind_addr[1]}", server)
    finally:
        http.stop()
        app.extensions["corral"].close()


@pytest.fixture
def ollama_client(shim):
    import ollama

    return ollama.Client(host=shim.url)


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch):
    """Tests talk to loopback only; a proxy from the environment must never see that traffic."""
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
