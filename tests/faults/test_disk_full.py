"""A disk that fills during an upload, a pull, a create and a quantize: the request fails with Go's "no
space left on device" text and 507 Insufficient Storage, nothing half-written is left visible (no blob,
manifest or download file, no temp file), the store lists what it listed before, and once space is
freed the same request succeeds.

The store is a small tmpfs mounted by the test (root only; skipped with the reason otherwise), filled
with a filler file to leave a known amount free.
"""

from __future__ import annotations

import os

import pytest
import requests

from tests.faults.conftest import assert_consistent, fill
from tests.gguf_models import write_llama_gguf
from tests.registry.conftest import seed_registry

MIB = 1024


@pytest.fixture
def store_root(tmpfs, monkeypatch):
    """The in-process server's store (tests/conftest.py) on an 8 MiB tmpfs."""
    root = tmpfs(8 * MIB) / "models"
    monkeypatch.setenv("OLLAMA_MODELS", str(root))
    return root


def digest_of(path) -> str:
    from corral.store.digests import file_digest

    return file_digest(path)


def upload(url: str, path) -> requests.Response:
    with open(path, "rb") as f:
        return requests.post(f"{url}/api/blobs/{digest_of(path)}", data=f, timeout=60)


def state(url: str, root) -> tuple[list, list]:
    """What a client sees (tags) and what is on disk (blobs, manifests), for before/after comparisons."""
    tags = sorted(m["name"] for m in requests.get(url + "/api/tags", timeout=30).json()["models"])
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    return tags, files


def assert_no_space(reply: requests.Response) -> None:
    assert reply.status_code == 507, reply.text
    assert "no space left on device" in reply.json()["error"]


def make_existing_model(shim, tmp_path) -> None:
    """A model that is there before the disk fills and must still be there after."""
    gguf = write_llama_gguf(tmp_path / "existing.gguf", seed=9)
    assert upload(shim.url, gguf).status_code == 201
    r = requests.post(shim.url + "/api/create", json={"model": "existing", "files": {"m.gguf": digest_of(gguf)},
                                                      "stream": False}, timeout=60)
    assert r.json() == {"status": "success"}


def test_upload_on_a_full_disk(shim, store_root, tmp_path):
    make_existing_model(shim, tmp_path)
    before = state(shim.url, store_root)
    filler = fill(store_root.parent, leave=200 * 1024)
    gguf = write_llama_gguf(tmp_path / "big.gguf", quantizable=True)  # ~3 MB
    assert_no_space(upload(shim.url, gguf))
    assert state(shim.url, store_root) == before
    assert_consistent(store_root)
    filler.unlink()
    assert upload(shim.url, gguf).status_code == 201


def test_create_on_a_full_disk(shim, store_root, tmp_path):
    make_existing_model(shim, tmp_path)
    gguf = write_llama_gguf(tmp_path / "m.gguf")
    assert upload(shim.url, gguf).status_code == 201
    before = state(shim.url, store_root)
    filler = fill(store_root.parent)  # not a byte left: the config blob cannot be written
    body = {"model": "new", "files": {"m.gguf": digest_of(gguf)}, "system": "You are terse."}
    assert_no_space(requests.post(shim.url + "/api/create", json={**body, "stream": False}, timeout=60))
    streamed = requests.post(shim.url + "/api/create", json=body, timeout=60)
    last = streamed.text.splitlines()[-1]
    assert streamed.status_code == 200 and "no space left on device" in last and '"error"' in last
    assert state(shim.url, store_root) == before
    assert_consistent(store_root)
    filler.unlink()
    r = requests.post(shim.url + "/api/create", json={**body, "stream": False}, timeout=60)
    assert r.json() == {"status": "success"}
    assert "new:latest" in state(shim.url, store_root)[0]


def test_quantize_on_a_full_disk(shim, store_root, tmp_path):
    gguf = write_llama_gguf(tmp_path / "f16.gguf", quantizable=True)  # F16, ~3 MB; Q8_0 is about half
    assert upload(shim.url, gguf).status_code == 201
    body = {"model": "q", "files": {"m.gguf": digest_of(gguf)}, "quantize": "q8_0", "stream": False}
    before = state(shim.url, store_root)
    filler = fill(store_root.parent, leave=600 * 1024)  # the quantizer runs out of space mid-file
    assert_no_space(requests.post(shim.url + "/api/create", json=body, timeout=120))
    assert state(shim.url, store_root) == before
    assert_consistent(store_root)
    filler.unlink()
    assert requests.post(shim.url + "/api/create", json=body, timeout=120).json() == {"status": "success"}
    show = requests.post(shim.url + "/api/show", json={"model": "q"}, timeout=30).json()
    assert show["details"]["quantization_level"] == "Q8_0"


def test_pull_on_a_full_disk(shim, store_root, tmp_path, registry):
    _, manifest, _ = seed_registry(tmp_path, registry.host, "team/big:latest", size=3_000_000)
    before = state(shim.url, store_root)
    filler = fill(store_root.parent, leave=1024 * 1024)
    body = {"model": f"{registry.host}/team/big:latest", "insecure": True}
    assert_no_space(requests.post(shim.url + "/api/pull", json={**body, "stream": False}, timeout=60))
    streamed = requests.post(shim.url + "/api/pull", json=body, timeout=60).text.splitlines()
    assert streamed[0] == '{"status":"pulling manifest"}' and "no space left on device" in streamed[-1]
    assert state(shim.url, store_root) == before  # no blob, no manifest, no -partial reservation
    assert not list((store_root / "blobs").glob("*-partial*"))
    assert_consistent(store_root)
    filler.unlink()
    r = requests.post(shim.url + "/api/pull", json={**body, "stream": False}, timeout=60)
    assert r.json() == {"status": "success"}
    assert f"{registry.host}/team/big:latest" in state(shim.url, store_root)[0]
    assert_consistent(store_root)
    assert os.path.getsize(store_root / "blobs" / manifest.layers[0].digest.replace(":", "-")) == 3_000_000
