"""SIGKILL of `corral serve` at several points of pull, push, create with quantize and delete: each time
the server restarts into a consistent store (manifests parse, blobs exist and hash, no temp file left:
store/fsck.py), the interrupted operation then succeeds, and the pull resumes rather than starting over.

One store and one server lineage throughout: every kill is followed by the restart the next step uses,
so the loop costs one server start per kill point. FAULT_KILL_ROUNDS (default 1) repeats the create and
delete kill points with other delays, for a longer run.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time

import requests

from corral.store import fsck
from corral.store.digests import file_digest
from tests.faults.conftest import assert_consistent
from tests.gguf_models import write_llama_gguf
from tests.registry.conftest import seed_registry, wait_for
from tests.registry.test_registry_resume import recorded, settled

SIZE = 4_000_000
ROUNDS = int(os.environ.get("FAULT_KILL_ROUNDS", "1"))


class Lineage:
    """The server of the moment over one store; kill() restarts it and checks the store."""

    def __init__(self, corral_procs, root, env):
        self.make, self.root, self.env = corral_procs, root, env
        self.n = 0
        self.left: list[str] = []
        self.server = self._start()

    def _start(self):
        self.n += 1
        return self.make(self.root, f"home-{self.n}", self.env)

    def kill_and_restart(self):
        self.server.kill()
        self.left = fsck.check(self.root, hash_blobs=False).strays  # what the killed server left behind
        self.server = self._start()  # its start-up sweep ran before it listened
        return assert_consistent(self.root)

    def post(self, path, body, **kw):
        return self.server.post(path, body, **kw)


def stream_until(lineage, path, body, predicate) -> requests.Response:
    """Posts a streamed request and reads it until a line satisfies `predicate` (the reply stays open)."""
    reply = requests.post(lineage.server.url + path, json=body, stream=True, timeout=120)
    lines = reply.iter_lines()
    for raw in lines:
        if raw and predicate(json.loads(raw)):
            reply.lines = lines  # type: ignore[attr-defined]  # a collected iterator would end the request
            return reply
    raise AssertionError(f"{path} ended before the kill point")


def kill_after(lineage, path, body, seconds: float, method: str = "POST"):
    """Sends a request (its reply is not awaited) and kills the server `seconds` later."""
    def send():
        try:
            requests.request(method, lineage.server.url + path, json=body, timeout=60)
        except requests.RequestException:
            pass  # the server died under it

    threading.Thread(target=send, daemon=True).start()
    time.sleep(seconds)
    return lineage.kill_and_restart()


def names(report) -> set[str]:
    return set(report.manifests)


def test_sigkill_at_kill_points(corral_procs, tmp_path, registry, proxy_factory):
    _, manifest, _ = seed_registry(tmp_path, registry.host, "team/big:latest", size=SIZE)
    digest = manifest.layers[0].digest
    proxy = proxy_factory(registry.host, rate=400_000)  # per connection: four parts, ~2.5 s in all
    root = tmp_path / "store"
    blobs = root / "blobs"
    lineage = Lineage(corral_procs, root, {"CORRAL_REGISTRY_PART_SIZE": "1000000", "CORRAL_DRAIN_SECONDS": "1"})
    big = f"{proxy.host}/team/big:latest"

    # -- pull: killed after the first and after a later checkpoint; then it resumes --------------------
    kept = 0
    for at_least in (1_000_000, 2_500_000):
        reply = stream_until(lineage, "/api/pull", {"model": big, "insecure": True}, lambda line: "digest" in line)
        assert wait_for(lambda: recorded(blobs, digest) >= at_least, timeout=60)
        report = lineage.kill_and_restart()
        reply.close()
        assert big not in names(report)  # no model before its blobs are all there
        assert recorded(blobs, digest) >= kept  # what was recorded stays recorded
        kept = recorded(blobs, digest)
    before = settled(proxy)
    proxy.rate = None
    assert lineage.post("/api/pull", {"model": big, "insecure": True, "stream": False}).json() == {"status": "success"}
    fetched = proxy.blob_bytes - before
    assert fetched <= SIZE - kept + manifest.config.size < SIZE  # resumed: only what was not recorded
    assert file_digest(blobs / digest.replace(":", "-")) == digest

    # -- create with quantize: killed while the quantizer writes, and at a few delays ------------------
    gguf = write_llama_gguf(tmp_path / "f16.gguf", quantizable=True)
    source = file_digest(gguf)
    with open(gguf, "rb") as f:
        assert requests.post(f"{lineage.server.url}/api/blobs/{source}", data=f, timeout=60).status_code == 201
    create = {"model": "q", "files": {"m.gguf": source}, "quantize": "q4_K_M"}
    reply = stream_until(lineage, "/api/create", create, lambda line: line.get("status", "").startswith("quantizing"))
    assert "q:latest" not in names(lineage.kill_and_restart())
    reply.close()
    assert [os.path.basename(p) for p in lineage.left if p.endswith("-tmp")], lineage.left  # swept at start
    rng = random.Random(13)
    for _ in range(ROUNDS):
        kill_after(lineage, "/api/create", create, rng.uniform(0.05, 0.6))
    assert lineage.post("/api/create", {**create, "stream": False}).json() == {"status": "success"}

    # -- push: killed as its first blob goes (the store is only read: it must simply stay whole) ------
    pushed = f"{registry.host}/me/q:latest"
    assert lineage.post("/api/copy", {"source": "q", "destination": pushed}).status_code == 200
    reply = stream_until(lineage, "/api/push", {"model": pushed, "insecure": True}, lambda line: "digest" in line)
    lineage.kill_and_restart()
    reply.close()
    assert lineage.post("/api/push", {"model": pushed, "insecure": True, "stream": False}).json() == {
        "status": "success"}

    # -- delete: killed right after the request, and a moment later ------------------------------------
    assert lineage.post("/api/create", {"model": "base", "files": {"m.gguf": source}, "stream": False}).json() == {
        "status": "success"}  # keeps the uploaded GGUF referenced; each d<k> adds blobs only it has
    delays = [0.0, 0.01] + [rng.uniform(0, 0.05) for _ in range(ROUNDS - 1)]
    for k, delay in enumerate(delays):
        made = lineage.post("/api/create", {"model": f"d{k}", "files": {"m.gguf": source}, "system": f"d{k}",
                                            "stream": False})
        assert made.json() == {"status": "success"}
        kill_after(lineage, "/api/delete", {"model": f"d{k}"}, delay, method="DELETE")
        r = requests.delete(lineage.server.url + "/api/delete", json={"model": f"d{k}"}, timeout=60)
        assert r.status_code in (200, 404)  # done before the kill, or now
    final = assert_consistent(root)
    assert {"base:latest", "q:latest", big} <= names(final)
    assert not any(name.startswith("d") for name in names(final))
