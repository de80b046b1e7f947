"""Two `corral serve` processes on one store (the documented scale-out on one host): concurrent creates,
copies, deletes, pulls and uploads on both never corrupt it. Every manifest parses, every blob a manifest
names exists and hashes right, and no temp file is left once both have stopped; the start-up prune of
a server started afterwards keeps every model.

The hazards this exercises: one server pruning a blob the other has just referenced (pins are flocks on
the blob files, store/prune.py), both downloading the same blob into one `-partial` file (the download
holds its flock, service/registry/partial.py), and one server's start-up sweep removing the other's temp
files (store/locks.py).
"""

from __future__ import annotations

import random
import threading
import time

import requests

from corral.store.digests import file_digest, sha256_digest
from corral.store.models import ModelStore
from tests.faults.conftest import assert_consistent, start_all
from tests.gguf_models import write_llama_gguf
from tests.registry.conftest import seed_registry

SECONDS = 3.0
# text layers no other model has: each delete of x prunes their blobs, each create of x writes them again
ONLY_X = {"system": "only x", "template": "{{ .Prompt }} (x)", "license": ["x license"],
          "parameters": {"seed": 7}, "messages": [{"role": "user", "content": "x"}]}


def ok_or(reply: requests.Response, *allowed: int) -> None:
    """A reply that is a success or one of the statuses a race may explain (a model deleted meanwhile)."""
    assert reply.status_code == 200 or reply.status_code in allowed, (reply.status_code, reply.text)
    for line in reply.text.splitlines():
        assert '"error"' not in line or reply.status_code in allowed or _raced(line), line


def _raced(line: str) -> bool:
    return "not found" in line or "does not exist" in line


def test_two_servers_share_one_store(corral_procs, tmp_path, registry):
    root = tmp_path / "shared"
    for name, seed in (("m", 1), ("n", 2)):  # real GGUFs (~0.7 MB), so that show can read them
        seed_registry(tmp_path, registry.host, f"team/{name}:latest",
                      gguf=write_llama_gguf(tmp_path / f"{name}.gguf", seed=seed))
    env = {"CORRAL_REGISTRY_PART_SIZE": "300000"}
    a, b = corral_procs(root, "home-a", env, start=False), corral_procs(root, "home-b", env, start=False)
    start_all(a, b)
    gguf = write_llama_gguf(tmp_path / "base.gguf")
    digest = file_digest(gguf)
    assert requests.post(f"{a.url}/api/blobs/{digest}", data=gguf.read_bytes(), timeout=60).status_code == 201
    ok_or(a.post("/api/create", {"model": "keep", "files": {"m.gguf": digest}, "stream": False}))
    deadline = time.monotonic() + SECONDS
    errors: list[BaseException] = []
    counts = {"create": 0, "delete": 0, "copy": 0, "pull": 0, "upload": 0, "recreate": 0, "unmake": 0}

    def loop(kind, servers, seed):
        rng = random.Random(seed)
        try:
            while time.monotonic() < deadline:
                server = rng.choice(servers)
                i = rng.randrange(3)
                if kind == "recreate":  # on one server, while the other deletes the same model: the race
                    ok_or(a.post("/api/create", {"model": "x", "files": {"m.gguf": digest}, "stream": False,
                                                 **ONLY_X}))  # blobs only x references
                elif kind == "unmake":
                    ok_or(requests.delete(b.url + "/api/delete", json={"model": "x"}, timeout=60), 404)
                elif kind == "create":  # text layers shared between models and servers
                    ok_or(server.post("/api/create", {"model": f"c{i}", "files": {"m.gguf": digest},
                                                      "system": f"system {rng.randrange(4)}", "stream": False}))
                elif kind == "delete":
                    pulled = f"{registry.host}/team/{rng.choice('mn')}:latest"
                    ok_or(requests.delete(server.url + "/api/delete", timeout=60,
                                          json={"model": rng.choice([f"c{i}", f"d{i}", "p", pulled])}), 404)
                elif kind == "copy":
                    ok_or(server.post("/api/copy", {"source": f"c{i}", "destination": f"d{i}"}), 404)
                elif kind == "pull":  # both servers pull the same blobs, while deletes prune them
                    model = f"{registry.host}/team/{rng.choice('mn')}:latest"
                    ok_or(server.post("/api/pull", {"model": model, "insecure": True, "stream": False}))
                    ok_or(server.post("/api/copy", {"source": model, "destination": "p"}), 404)
                elif kind == "upload":
                    data = rng.randbytes(rng.choice([10, 300_000]))
                    r = requests.post(f"{server.url}/api/blobs/{sha256_digest(data)}", data=data, timeout=60)
                    assert r.status_code in (200, 201), r.text
                counts[kind] += 1
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=loop, args=(kind, [a, b], n))
               for n, kind in enumerate(["create", "create", "delete", "delete", "copy", "pull", "pull", "upload",
                                         "recreate", "unmake"])]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, [str(e)[:800] for e in errors]
    assert all(counts.values()), counts

    listed = sorted(m["name"] for m in requests.get(a.url + "/api/tags", timeout=30).json()["models"])
    assert listed == sorted(m["name"] for m in requests.get(b.url + "/api/tags", timeout=30).json()["models"])
    for name in listed:  # every model both list is whole: show reads its config and GGUF header
        assert a.post("/api/show", {"model": name}).status_code == 200
    for server in (a, b):
        server.proc.terminate()  # both drain at once
    a.stop()
    b.stop()
    report = assert_consistent(root)
    assert sorted(report.manifests) == listed

    again = ModelStore(root)  # what a server starting on the store afterwards does and sees
    again.startup_prune()
    assert sorted(m["name"] for m in again.list_models()) == listed
    assert_consistent(root)
