"""`corral serve` as a real subprocess for the mesh tests (metrics, auth, TLS, drain), with its own store,
HOME and environment, on free ports read back from its log; and helpers to make a tiny model in it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import pytest

from corral.protos.ollama.v1 import ollama_pb2 as pb
from corral.protos.ollama.v1 import ollama_pb2_grpc as pb_grpc
from corral.store.digests import file_digest
from tests.gguf_models import write_llama_gguf

EXE = os.path.join(os.path.dirname(sys.executable), "corral")


class Serve:
    """One `corral serve` process. grpc_port / url / metrics_port come from its log lines."""

    def __init__(self, tmp: Path, *args: str, env: dict | None = None):
        home = tmp / "home"
        home.mkdir(parents=True, exist_ok=True)
        base = {k: v for k, v in os.environ.items() if not k.startswith(("OLLAMA_", "CORRAL_"))}
        self.env = dict(base, OLLAMA_MODELS=str(tmp / "models"), HOME=str(home), PYTHONUNBUFFERED="1",
                        **(env or {}))
        self.args = ["serve", "--grpc-address", "127.0.0.1:0", "--http-address", "127.0.0.1:0", *args]
        self.log: list[str] = []
        self.grpc_port = self.url = self.metrics_port = None
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 60) -> Serve:
        self.proc = subprocess.Popen([EXE, *self.args], env=self.env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        ready = threading.Event()
        wants_grpc = "--no-grpc" not in self.args
        wants_http = "--no-http" not in self.args
        wants_metrics = "CORRAL_METRICS_ADDRESS" in self.env

        def read():
            for line in self.proc.stdout:
                self.log.append(line)
                if m := re.search(r"gRPC listening on [\d.]+:(\d+)", line):
                    self.grpc_port = int(m.group(1))
                if m := re.search(r"listening on (https?://127\.0\.0\.1:\d+) ", line):
                    self.url = m.group(1)
                if m := re.search(r"metrics listening on http://[\d.]+:(\d+)", line):
                    self.metrics_port = int(m.group(1))
                if ((self.grpc_port or not wants_grpc) and (self.url or not wants_http)
                        and (self.metrics_port or not wants_metrics)):
                    ready.set()

        threading.Thread(target=read, daemon=True).start()
        if not ready.wait(timeout):
            self.stop()
            raise AssertionError("corral serve did not start:\n" + "".join(self.log))
        return self

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def signal(self, sig=signal.SIGTERM) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 60) -> int:
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(40)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def serve_factory(tmp_path):
    started: list[Serve] = []

    def make(*args: str, env: dict | None = None, folder: str = "serve") -> Serve:
        server = Serve(tmp_path / folder, *args, env=env).start()
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


def make_model(stub: pb_grpc.OllamaStub, tmp_path: Path, name: str = "tiny", metadata=None, **gguf) -> int:
    """A tiny llama GGUF uploaded and created as `name` (with call `metadata`, e.g. a key); returns its size."""
    path = write_llama_gguf(tmp_path / f"{name}.gguf", **gguf)
    digest, data = file_digest(path), path.read_bytes()

    def messages():
        yield pb.PushBlobRequest(digest=digest)
        for i in range(0, len(data), 1 << 16):
            yield pb.PushBlobRequest(data=data[i: i + (1 << 16)])

    stub.PushBlob(messages(), metadata=metadata)
    req = pb.CreateRequest(model=name)
    req.files["model.gguf"] = digest
    list(stub.Create(req, metadata=metadata))
    return len(data)


def wait_until(predicate, timeout: float = 10, step: float = 0.005):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    return predicate()


def channel(target: str, credentials: grpc.ChannelCredentials | None = None) -> grpc.Channel:
    options = [("grpc.enable_http_proxy", 0)]
    return grpc.secure_channel(target, credentials, options) if credentials else grpc.insecure_channel(target, options)
