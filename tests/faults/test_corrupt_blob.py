"""A flipped bit in a stored blob is found, not served: loading the model (generate, embed) fails with a
500 naming the blob's digest, a pull re-downloads the damaged blob instead of trusting it, and the check
costs a stat, not a hash, while the blob is untouched (store/verify.py)."""

from __future__ import annotations

import os

import requests

import tests.gguf_models as gm
from corral.protos.ollama.v1 import ollama_pb2 as pb
from corral.store import fsck, verify
from corral.store.digests import file_digest
from tests.faults.conftest import assert_consistent
from tests.models_helpers import upload
from tests.registry.conftest import seed_registry


def create(server, tmp_path, name, writer=gm.write_llama_gguf, **kw) -> str:
    """Creates a model from a fresh GGUF; returns its model blob's digest."""
    path = writer(tmp_path / f"{name}.gguf", **kw)
    digest = upload(server.stub, path)
    req = pb.CreateRequest(model=name)
    req.files["model.gguf"] = digest
    list(server.stub.Create(req))
    return digest


def flip(path, offset=None) -> None:
    """Flips every bit of one byte in place (an ordinary write: the file's times move as they would)."""
    size = os.path.getsize(path)
    offset = size // 2 if offset is None else offset
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([byte ^ 0xFF]))


def test_generate_and_embed_refuse_a_corrupt_blob(server, shim, tmp_path):
    llama = create(server, tmp_path, "llama")
    bert = create(server, tmp_path, "bert", gm.write_bert_gguf)
    ok = requests.post(shim.url + "/api/generate", json={"model": "llama", "prompt": "hi", "stream": False,
                                                         "options": {"num_predict": 2}}, timeout=60)
    assert ok.status_code == 200
    requests.post(shim.url + "/api/generate", json={"model": "llama", "keep_alive": 0}, timeout=60)

    for digest in (llama, bert):
        flip(server.store.blobs.path(digest))
    r = requests.post(shim.url + "/api/generate", json={"model": "llama", "prompt": "hi", "stream": False},
                      timeout=60)
    assert r.status_code == 500 and f"blob {llama} is corrupt" in r.json()["error"], r.text
    r = requests.post(shim.url + "/api/embed", json={"model": "bert", "input": "hi"}, timeout=60)
    assert r.status_code == 500 and f"blob {bert} is corrupt" in r.json()["error"], r.text
    assert requests.get(shim.url + "/api/ps", timeout=30).json()["models"] == []  # nothing was loaded
    report = fsck.check(server.root)  # the store checker names both
    assert {p.split(" blob ")[1].split()[0] for p in report.problems} == {llama, bert}, report.text()

    flip(server.store.blobs.path(llama))  # flipped back: the same bytes again, verified again
    r = requests.post(shim.url + "/api/generate", json={"model": "llama", "prompt": "hi", "stream": False,
                                                        "options": {"num_predict": 2}}, timeout=60)
    assert r.status_code == 200 and r.json()["eval_count"] == 2


def test_a_stamped_blob_is_not_hashed_again(server, shim, tmp_path, monkeypatch):
    digest = create(server, tmp_path, "llama")
    hashed = []
    real = verify.hash_fd
    monkeypatch.setattr(verify, "hash_fd", lambda fd: hashed.append(fd) or real(fd))
    body = {"model": "llama", "prompt": "hi", "stream": False, "options": {"num_predict": 1}}
    for _ in range(3):
        assert requests.post(shim.url + "/api/generate", json=body, timeout=60).status_code == 200
    assert hashed == []  # stamped when it was uploaded: its bytes were hashed as they were written

    # a blob nobody stamped (an Ollama store served for the first time) is hashed at its first load only
    path = server.store.blobs.path(digest)
    os.removexattr(path, verify.XATTR)
    for _ in range(3):
        assert requests.post(shim.url + "/api/generate", json=body, timeout=60).status_code == 200
    assert len(hashed) == 1
    assert os.getxattr(path, verify.XATTR).startswith(digest.encode())  # stamped for every server now


def test_pull_refetches_a_corrupt_local_blob(shim, store_root, tmp_path, registry, proxy_factory):
    _, manifest, _ = seed_registry(tmp_path, registry.host, "team/m:latest", size=2_000_000)
    proxy = proxy_factory(registry.host)
    body = {"model": f"{proxy.host}/team/m:latest", "insecure": True, "stream": False}
    assert requests.post(shim.url + "/api/pull", json=body, timeout=60).json() == {"status": "success"}
    first = proxy.blob_bytes
    model = manifest.layers[0].digest
    blob = store_root / "blobs" / model.replace(":", "-")

    assert requests.post(shim.url + "/api/pull", json=body, timeout=60).json() == {"status": "success"}
    assert proxy.blob_bytes == first  # intact: nothing fetched again

    flip(blob, offset=12345)
    assert requests.post(shim.url + "/api/pull", json=body, timeout=60).json() == {"status": "success"}
    assert proxy.blob_bytes - first == 2_000_000  # the damaged blob, and only it, came again
    assert file_digest(blob) == model
    assert_consistent(store_root)


def test_writing_the_right_bytes_again_repairs_a_damaged_blob(tmp_path):
    from corral.store.models import ModelStore

    store = ModelStore(tmp_path / "models")
    data = os.urandom(100_000)
    digest, created = store.blobs.write([data])
    assert created and store.blobs.write([data]) == (digest, False)  # intact: left as it is
    flip(store.blobs.path(digest))
    assert not store.blobs.intact(digest)
    assert store.blobs.write([data]) == (digest, True)  # damaged: replaced by the verified bytes
    assert store.blobs.intact(digest) and store.blobs.path(digest).read_bytes() == data


def test_a_damaged_blob_is_missing_to_head_and_replaced_by_an_upload(server, shim, tmp_path):
    """What the ollama client does before create (HEAD, then POST what is missing) repairs a damaged blob."""
    data = os.urandom(50_000)
    path = tmp_path / "data.bin"
    path.write_bytes(data)
    digest = file_digest(path)
    url = f"{shim.url}/api/blobs/{digest}"
    assert requests.post(url, data=data, timeout=30).status_code == 201
    assert requests.head(url, timeout=30).status_code == 200
    flip(server.store.blobs.path(digest))
    assert requests.head(url, timeout=30).status_code == 404
    assert requests.post(url, data=data, timeout=30).status_code == 201
    assert requests.head(url, timeout=30).status_code == 200
    assert server.store.blobs.path(digest).read_bytes() == data
