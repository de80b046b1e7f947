"""Resuming interrupted pulls: after SIGKILL of a real `corral serve`, after the client leaves, and the
crash-safety rules of the part records themselves."""

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import requests

from corral.service.registry.partial import PartialFile
from tests.registry.conftest import plain_store, seed_registry, wait_for


def recorded(blobs, digest) -> int:
    total = 0
    for path in blobs.glob(f"sha256-{digest[7:]}-partial-*"):
        if path.name.endswith(".tmp"):
            continue
        try:
            total += json.loads(path.read_text())["Completed"]
        except (ValueError, OSError):
            pass
    return total


def settled(proxy) -> int:
    """The proxy's blob byte count once it stops moving (its threads may finish a write after a kill)."""
    last = -1
    while proxy.blob_bytes != last:
        last = proxy.blob_bytes
        time.sleep(0.5)
    return last


class CorralProcess:
    """`corral serve` in a subprocess, on free ports, with its own store and HOME."""

    def __init__(self, root, home, env):
        self.env = dict(os.environ, OLLAMA_MODELS=str(root), HOME=str(home), **env)
        self.proc = None
        self.url = None

    def start(self):
        exe = os.path.join(os.path.dirname(sys.executable), "corral")
        self.proc = subprocess.Popen([exe, "serve", "--grpc-address", "127.0.0.1:0", "--http-address",
                                      "127.0.0.1:0"], env=self.env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        found = threading.Event()
        log = []

        def drain():
            for line in self.proc.stdout:
                log.append(line)
                match = re.search(r"listening on (http://127\.0\.0\.1:\d+)", line)
                if match:
                    self.url = match.group(1)
                    found.set()

        threading.Thread(target=drain, daemon=True).start()
        assert found.wait(60), "corral serve did not start:\n" + "".join(log)
        return self

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def test_pull_resumes_after_the_server_is_killed(registry, tmp_path, proxy_factory):
    size = 16_000_000
    _, manifest, _ = seed_registry(tmp_path, registry.host, "team/big:latest", size=size)
    digest = manifest.layers[0].digest
    proxy = proxy_factory(registry.host, rate=1_000_000)  # per connection; four parts run at once
    root, home = tmp_path / "store", tmp_path / "corral-home"
    home.mkdir()
    env = {"CORRAL_REGISTRY_PART_SIZE": "4000000", "CORRAL_REGISTRY_RETRIES": "2"}
    model = f"{proxy.host}/team/big:latest"

    server = CorralProcess(root, home, env).start()
    try:
        reply = requests.post(f"{server.url}/api/pull", json={"model": model, "insecure": True}, stream=True,
                              timeout=60)
        lines = reply.iter_lines()
        assert json.loads(next(lines)) == {"status": "pulling manifest"}
        blobs = root / "blobs"
        assert wait_for(lambda: recorded(blobs, digest) >= size // 4, timeout=60)
        server.kill()
    finally:
        server.stop()
    saved = recorded(blobs, digest)
    first = settled(proxy)
    assert 0 < saved <= first < size
    assert (blobs / f"sha256-{digest[7:]}-partial").stat().st_size == size
    assert not (blobs / f"sha256-{digest[7:]}").exists()

    proxy.rate = None
    server = CorralProcess(root, home, env).start()
    try:
        reply = requests.post(f"{server.url}/api/pull", json={"model": model, "insecure": True}, timeout=120)
        lines = [json.loads(line) for line in reply.text.splitlines()]
    finally:
        server.stop()
    assert lines[-1] == {"status": "success"}, lines
    # the first progress line of the model blob already counts the bytes kept from the first attempt
    progress = [l for l in lines if l.get("digest") == digest]
    assert progress[0].get("completed", 0) >= saved
    second = proxy.blob_bytes - first
    assert second < size and second <= size - saved + manifest.config.size
    blob = blobs / f"sha256-{digest[7:]}"
    assert "sha256:" + hashlib.sha256(blob.read_bytes()).hexdigest() == digest
    assert not list(blobs.glob("*-partial*"))


def test_pull_resumes_after_the_client_leaves(registry, tmp_path, shim, store_root, proxy_factory, monkeypatch):
    monkeypatch.setenv("CORRAL_REGISTRY_PART_SIZE", "2000000")
    size = 8_000_000
    _, manifest, _ = seed_registry(tmp_path, registry.host, "team/leave:latest", size=size)
    digest = manifest.layers[0].digest
    proxy = proxy_factory(registry.host, rate=1_000_000)
    model = f"{proxy.host}/team/leave:latest"
    reply = requests.post(f"{shim.url}/api/pull", json={"model": model, "insecure": True}, stream=True,
                          timeout=60)
    blobs = store_root / "blobs"
    assert wait_for(lambda: recorded(blobs, digest) >= size // 4, timeout=60)
    reply.close()  # the client goes away: the download stops, its state stays
    transfer = shim.server.servicer.transfer
    assert wait_for(lambda: not transfer.downloads._active, timeout=20)
    stopped_at = settled(proxy)  # nothing more is fetched for nobody
    saved = recorded(blobs, digest)
    assert saved > 0

    proxy.rate = None
    reply = requests.post(f"{shim.url}/api/pull", json={"model": model, "insecure": True, "stream": False},
                          timeout=60)
    assert reply.json() == {"status": "success"}
    assert proxy.blob_bytes - stopped_at <= size - saved + manifest.config.size


def test_records_never_count_more_than_was_fsynced(tmp_path):
    store = plain_store(tmp_path / "s")
    digest = "sha256:" + "ab" * 32
    partial = PartialFile(store.paths, digest, 10_000, 4_000)
    assert partial.open() == 0
    assert [(p.offset, p.size) for p in partial.parts] == [(0, 4000), (4000, 4000), (8000, 2000)]
    partial.write(b"x" * 1000, 0)
    partial.parts[0].completed = 1000
    partial.write(b"y" * 500, 4000)
    partial.parts[1].completed = 500
    # written but not checkpointed: a crash now keeps nothing
    records = [json.loads(store.paths.partial_part(digest, n).read_text()) for n in range(3)]
    assert [r["Completed"] for r in records] == [0, 0, 0]
    partial.checkpoint()
    assert json.loads(store.paths.partial_part(digest, 0).read_text()) == {
        "N": 0, "Offset": 0, "Size": 4000, "Completed": 1000}
    partial.close()

    again = PartialFile(store.paths, digest, 10_000, 999)  # the recorded layout wins over a new part size
    assert again.open() == 1500
    assert [(p.offset, p.size, p.completed) for p in again.parts] == [(0, 4000, 1000), (4000, 4000, 500),
                                                                      (8000, 2000, 0)]
    assert again.frontier() == 1000
    again.close()


def test_inconsistent_records_restart_from_zero(tmp_path):
    store = plain_store(tmp_path / "s")
    digest = "sha256:" + "cd" * 32
    partial = PartialFile(store.paths, digest, 8_000, 4_000)
    partial.open()
    partial.parts[0].completed = 4000
    partial.write(b"z" * 4000, 0)
    partial.checkpoint()
    partial.close()
    store.paths.partial_part(digest, 1).write_text("{not json")
    again = PartialFile(store.paths, digest, 8_000, 4_000)
    assert again.open() == 0
    again.close()
    # a record claiming more than its part is refused too
    store.paths.partial_part(digest, 0).write_text(json.dumps({"N": 0, "Offset": 0, "Size": 4000,
                                                               "Completed": 5000}))
    assert PartialFile(store.paths, digest, 8_000, 4_000).open() == 0
