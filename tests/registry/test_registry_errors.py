"""Failures a pull or push must report clearly, leaving nothing half-written visible."""

import json
import os
import shutil
import socket
import subprocess

import pytest
import requests

from tests.registry.conftest import make_model, seed_registry


def lines_of(url: str, path: str, body: dict) -> list[dict]:
    reply = requests.post(f"{url}{path}", json=body, stream=True, timeout=120)
    assert reply.status_code == 200, reply.text
    return [json.loads(line) for line in reply.iter_lines() if line]


def store_files(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def test_missing_manifest(registry, shim):
    lines = lines_of(shim.url, "/api/pull", {"model": f"{registry.host}/team/nothing:latest", "insecure": True})
    assert lines == [{"status": "pulling manifest"}, {"error": "pull model manifest: file does not exist"}]


def test_missing_manifest_stream_false_is_an_http_status(registry, shim):
    reply = requests.post(f"{shim.url}/api/pull", timeout=30,
                          json={"model": f"{registry.host}/team/nothing", "insecure": True, "stream": False})
    assert reply.status_code == 404
    assert reply.json() == {"error": "pull model manifest: file does not exist"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_registry(shim):
    port = free_port()
    lines = lines_of(shim.url, "/api/pull", {"model": f"127.0.0.1:{port}/team/m:latest", "insecure": True})
    assert lines[0] == {"status": "pulling manifest"}
    error = lines[1]["error"]
    assert error == (f'pull model manifest: Get "http://127.0.0.1:{port}/v2/team/m/manifests/latest": '
                     f"dial tcp 127.0.0.1:{port}: connect: connection refused")


def test_unreachable_registry_on_push(shim, store_root):
    port = free_port()
    name, _ = make_model(store_root, f"127.0.0.1:{port}/team/m:latest")
    lines = lines_of(shim.url, "/api/push", {"model": name.display, "insecure": True})
    assert lines[0] == {"status": "retrieving manifest"}
    assert "connect: connection refused" in lines[-1]["error"]


def test_corrupted_blob_is_a_digest_error_and_stores_nothing(registry, tmp_path, shim, store_root,
                                                             proxy_factory):
    _, manifest, _ = seed_registry(tmp_path, registry.host, "team/corrupt:latest")
    proxy = proxy_factory(registry.host, corrupt=True)
    before = store_files(store_root) if store_root.exists() else []
    lines = lines_of(shim.url, "/api/pull", {"model": f"{proxy.host}/team/corrupt:latest", "insecure": True})
    want = manifest.layers[0].digest
    error = lines[-1]["error"]
    assert error.startswith(f"digest mismatch, file must be downloaded again: want {want}, got sha256:")
    assert error[len(error) - 64:] != want[7:]
    after = [f for f in store_files(store_root) if f not in before]
    assert not [f for f in after if f.startswith("manifests/") or want[7:] in f], after


def test_corrupted_blob_then_a_good_registry_succeeds(registry, tmp_path, shim, store_root, proxy_factory):
    seed_registry(tmp_path, registry.host, "team/recover:latest")
    proxy = proxy_factory(registry.host, corrupt=True)
    model = f"{proxy.host}/team/recover:latest"
    assert "error" in lines_of(shim.url, "/api/pull", {"model": model, "insecure": True})[-1]
    proxy.corrupt = False
    assert lines_of(shim.url, "/api/pull", {"model": model, "insecure": True})[-1] == {"status": "success"}


def test_cut_connections_are_retried_and_resumed(registry, tmp_path, shim, proxy_factory, monkeypatch):
    monkeypatch.setenv("CORRAL_REGISTRY_PART_SIZE", "2000000")
    size = 4_000_000
    seed_registry(tmp_path, registry.host, "team/flaky:latest", size=size)
    proxy = proxy_factory(registry.host, cut_after=1_000_000)

    def heal():  # let the connection drop once, then serve normally
        proxy.cut_after = None

    import threading

    threading.Timer(1.0, heal).start()
    lines = lines_of(shim.url, "/api/pull", {"model": f"{proxy.host}/team/flaky:latest", "insecure": True})
    assert lines[-1] == {"status": "success"}
    assert proxy.blob_bytes < 2 * size  # resumed from where each part stopped, not restarted


def test_retries_exhausted(registry, tmp_path, shim, proxy_factory, monkeypatch):
    monkeypatch.setenv("CORRAL_REGISTRY_RETRIES", "2")
    seed_registry(tmp_path, registry.host, "team/dead:latest")
    proxy = proxy_factory(registry.host, cut_after=0)
    lines = lines_of(shim.url, "/api/pull", {"model": f"{proxy.host}/team/dead:latest", "insecure": True})
    assert lines[-1]["error"].startswith("max retries exceeded: ")


@pytest.fixture
def small_disk(store_root):
    """The store on a 4 MiB tmpfs (needs root and mount; skipped elsewhere)."""
    store_root.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("needs root to mount a small tmpfs")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(store_root)],
                          capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount tmpfs: {done.stderr.decode().strip()}")
    yield store_root
    subprocess.run(["umount", "-l", str(store_root)], check=False)


def test_disk_full(registry, tmp_path, small_disk, shim):
    _, manifest, _ = seed_registry(tmp_path, registry.host, "team/huge:latest", size=6_000_000)
    lines = lines_of(shim.url, "/api/pull", {"model": f"{registry.host}/team/huge:latest", "insecure": True})
    error = lines[-1]["error"]
    assert error.startswith("write ") and error.endswith(": no space left on device")
    left = store_files(small_disk)
    assert not [f for f in left if f.startswith("manifests/") or manifest.layers[0].digest[7:] in f], left
