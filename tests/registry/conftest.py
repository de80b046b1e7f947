"""Fixtures for the registry tests: a real Debian `docker-registry` on loopback, with no auth, htpasswd
Basic auth or token auth (a token server written here), and an HTTP proxy that throttles or corrupts.

Why real parts: the point of the registry client is to interoperate with registries it did not write, so
the tests run Docker's own distribution code (`apt-get install docker-registry`) with storage under the
test's tmp folder, started in the foreground on 127.0.0.1:0 (its log names the port). Nothing leaves the
machine.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.registry.proxy import Proxy
from tests.registry.tokenserver import TokenServer, make_cert

USER, PASSWORD = "corral", "s3cret-pass"


def bcrypt_hash(password: str) -> str:
    """A bcrypt hash for htpasswd: `htpasswd` if installed, else Python's crypt (libxcrypt), else bcrypt."""
    tool = shutil.which("htpasswd")
    if tool:
        out = subprocess.run([tool, "-nbB", "x", password], check=True, capture_output=True, text=True)
        return out.stdout.strip().split(":", 1)[1]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            import crypt  # removed in Python 3.13

        hashed = crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=1 << 5))
        if hashed and hashed.startswith("$2"):
            return hashed
    except ImportError:
        pass
    import bcrypt  # pip install bcrypt

    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=5)).decode()


@dataclass
class Registry:
    """A running `docker-registry serve` process."""

    root: Path
    auth: dict | None = None
    port: int = 0
    proc: subprocess.Popen | None = None
    log: list = field(default_factory=list)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def start(self) -> "Registry":
        exe = shutil.which("docker-registry")
        if exe is None:
            pytest.fail("docker-registry is not installed: apt-get install -y docker-registry (make system-deps)")
        self.root.mkdir(parents=True, exist_ok=True)
        lines = ["version: 0.1", "log:", "  level: info", "  accesslog:", "    disabled: true",
                 "storage:", "  filesystem:", f"    rootdirectory: {self.root / 'data'}",
                 "  delete:", "    enabled: true", "http:", "  addr: 127.0.0.1:0", "  secret: corral-tests"]
        if self.auth:
            lines.append("auth:")
            for kind, options in self.auth.items():
                lines.append(f"  {kind}:")
                lines.extend(f"    {k}: {v}" for k, v in options.items())
        config = self.root / "config.yml"
        config.write_text("\n".join(lines) + "\n")
        self.proc = subprocess.Popen([exe, "serve", str(config)], stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        found = threading.Event()

        def drain():
            for line in self.proc.stdout:
                self.log.append(line)
                match = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
                if match and not found.is_set():
                    self.port = int(match.group(1))
                    found.set()

        threading.Thread(target=drain, daemon=True).start()
        if not found.wait(20):
            self.stop()
            pytest.fail("docker-registry did not start:\n" + "".join(self.log))
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(autouse=True)
def _isolated_identity(tmp_path, monkeypatch):
    """Keys (~/.ollama) and docker credentials (~/.docker) of the tests stay in the tmp folder, and the
    environment's registry credentials and tuning never leak in."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for var in ("DOCKER_CONFIG", "OLLAMA_REGISTRY_USERNAME", "OLLAMA_REGISTRY_PASSWORD", "OLLAMA_NOPRUNE",
                "CORRAL_REGISTRY_PART_SIZE", "CORRAL_REGISTRY_STREAMS", "CORRAL_REGISTRY_RETRIES",
                "CORRAL_REGISTRY_STALL_TIMEOUT"):
        monkeypatch.delenv(var, raising=False)
    return home


@pytest.fixture
def registry(tmp_path):
    reg = Registry(tmp_path / "registry").start()
    yield reg
    reg.stop()


@pytest.fixture
def basic_registry(tmp_path):
    root = tmp_path / "registry-basic"
    root.mkdir()
    (root / "htpasswd").write_text(f"{USER}:{bcrypt_hash(PASSWORD)}\n")
    reg = Registry(root, {"htpasswd": {"realm": "basic-realm", "path": str(root / "htpasswd")}}).start()
    yield reg
    reg.stop()


@pytest.fixture
def token_registry(tmp_path):
    """A registry with token auth, and its token server (`.tokens`): Basic USER/PASSWORD, or Ollama's
    signed requests from a key in `tokens.allowed_keys` (None: any key whose signature verifies)."""
    root = tmp_path / "registry-token"
    root.mkdir()
    cert_path, key = make_cert(root)
    tokens = TokenServer(key, cert_path, users={USER: PASSWORD}).start()
    reg = Registry(root, {"token": {"realm": f"{tokens.url}/token", "service": tokens.service,
                                    "issuer": tokens.issuer, "rootcertbundle": str(cert_path)}}).start()
    reg.tokens = tokens
    yield reg
    reg.stop()
    tokens.stop()


@pytest.fixture
def proxy_factory():
    proxies = []

    def make(upstream: str, **kwargs) -> Proxy:
        proxy = Proxy(upstream, **kwargs).start()
        proxies.append(proxy)
        return proxy

    yield make
    for proxy in proxies:
        proxy.stop()


def wait_for(predicate, timeout=30.0, interval=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False


@pytest.fixture
def registry_env(monkeypatch):
    """Small parts, few retries and quick backoff for the in-process server."""
    monkeypatch.setenv("CORRAL_REGISTRY_RETRIES", "2")
    return monkeypatch



# -- models and Corral instances --------------------------------------------------------------------

CONFIG_MEDIA = "application/vnd.docker.container.image.v1+json"
MODEL_MEDIA = "application/vnd.ollama.image.model"


def plain_store(root: Path):
    """The store parts pull and push use, without ModelStore (for tests below the service)."""
    from types import SimpleNamespace

    from corral.store.blobs import BlobStore
    from corral.store.manifests import ManifestStore
    from corral.store.paths import StorePaths

    paths = StorePaths(root)
    paths.ensure_dirs()
    return SimpleNamespace(paths=paths, blobs=BlobStore(paths), manifests=ManifestStore(paths))


def make_model(root: Path, name_text: str, size: int = 3_000_000, seed: int = 0, gguf: Path | None = None,
               extra: bytes | None = None):
    """Writes a model straight into a store: a model layer (random bytes of `size`, or a GGUF file),
    optionally a params layer, and a config blob. Returns (name, manifest)."""
    import json
    import random

    from corral.store.manifests import Layer, Manifest
    from corral.store.names import parse_name

    store = plain_store(root)
    data = gguf.read_bytes() if gguf else random.Random(seed).randbytes(size)
    model = store.blobs.write_bytes(data)
    layers = [Layer(MODEL_MEDIA, model, len(data))]
    if extra is not None:
        layers.append(Layer("application/vnd.ollama.image.params", store.blobs.write_bytes(extra), len(extra)))
    config = json.dumps({"model_format": "gguf", "model_family": "llama", "model_families": ["llama"],
                         "model_type": "1M", "file_type": "F32", "architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": [l.digest for l in layers]}},
                        separators=(",", ":")).encode() + b"\n"
    config_layer = Layer(CONFIG_MEDIA, store.blobs.write_bytes(config), len(config))
    manifest = Manifest(config=config_layer, layers=layers)
    name = parse_name(name_text)
    store.manifests.write(name, manifest)
    return name, manifest


def seed_registry(tmp_path: Path, registry_host: str, name_text: str, **model_kwargs):
    """Puts a model into a registry with the push code itself (push is tested separately)."""
    from corral.service.registry.client import RegistryClient
    from corral.service.registry.push import push

    root = tmp_path / f"seed-{abs(hash(name_text))}"
    name, manifest = make_model(root, f"{registry_host}/{name_text}", **model_kwargs)
    client = RegistryClient()
    try:
        list(push(client, plain_store(root), name.full, True, threading.Event()))
    finally:
        client.close()
    return name, manifest, root


@dataclass
class Corral:
    url: str
    stub: object
    store: object
    root: Path


@pytest.fixture
def corral_factory(tmp_path):
    """Starts extra Corral instances (gRPC server + REST shim) on their own stores."""
    import grpc

    from corral.protos.ollama.v1 import ollama_pb2_grpc as pb_grpc
    from corral.rest_shim.app import create_app
    from corral.rest_shim.http import create_http_server, serve_in_thread
    from corral.service.server import close_servicer, create_server
    from corral.store.models import ModelStore

    running = []

    def make(name: str) -> Corral:
        root = tmp_path / name
        store = ModelStore(root)
        server, servicer, port = create_server(store, "127.0.0.1:0")
        server.start()
        app = create_app(f"127.0.0.1:{port}")
        http = create_http_server(app, "127.0.0.1", 0, threads=16)
        serve_in_thread(http)
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        running.append((server, servicer, http, app, channel))
        return Corral(f"http://127.0.0.1:{http.bind_addr[1]}", pb_grpc.OllamaStub(channel), store, root)

    yield make
    for server, servicer, http, app, channel in running:
        channel.close()
        http.stop()
        app.extensions["corral"].close()
        server.stop(grace=None).wait()
        close_servicer(servicer)
