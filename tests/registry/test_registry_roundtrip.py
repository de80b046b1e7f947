"""Push and pull against a real docker-registry: round trips, the official client, progress lines, skips,
pruning, concurrency and the REST validation texts."""

import hashlib
import json
import threading
import time

import ollama
import pytest
import requests

from tests.registry.conftest import make_model, seed_registry


def tags(url: str) -> dict:
    return {m["name"]: m for m in requests.get(f"{url}/api/tags", timeout=10).json()["models"]}


def ndjson(url: str, path: str, body: dict) -> list[dict]:
    reply = requests.post(f"{url}{path}", json=body, stream=True, timeout=120)
    assert reply.status_code == 200, reply.text
    assert reply.headers["Content-Type"].startswith("application/x-ndjson")
    return [json.loads(line) for line in reply.iter_lines() if line]


def test_push_then_pull_into_an_empty_store_is_identical(registry, corral_factory):
    a, b = corral_factory("a"), corral_factory("b")
    name, manifest = make_model(a.root, f"{registry.host}/team/tiny:v1", extra=b'{"temperature":0.5}\n')
    pushed = ndjson(a.url, "/api/push", {"model": name.display, "insecure": True})
    statuses = [line["status"] for line in pushed]
    assert statuses[0] == "retrieving manifest"
    assert statuses[-2:] == ["pushing manifest", "success"]
    for layer in manifest.layers + [manifest.config]:
        lines = [l for l in pushed if l.get("digest") == layer.digest]
        assert lines and lines[0]["status"] == f"pushing {layer.digest[7:19]}"
        assert lines[-1]["completed"] == lines[-1]["total"] == layer.size

    pulled = ndjson(b.url, "/api/pull", {"name": name.display, "insecure": True})
    statuses = [line["status"] for line in pulled]
    assert statuses[0] == "pulling manifest"
    assert statuses[-3:] == ["verifying sha256 digest", "writing manifest", "success"]
    for layer in manifest.layers + [manifest.config]:
        lines = [l for l in pulled if l.get("digest") == layer.digest]
        assert lines[0]["status"] == f"pulling {layer.digest[7:19]}" and lines[0]["total"] == layer.size
        assert lines[-1]["completed"] == layer.size

    ta, tb = tags(a.url), tags(b.url)
    assert ta[name.display]["digest"] == tb[name.display]["digest"]
    assert ta[name.display]["size"] == tb[name.display]["size"]
    src = a.root / "manifests" / name.host / "team" / "tiny" / "v1"
    dst = b.root / "manifests" / name.host / "team" / "tiny" / "v1"
    assert src.read_bytes() == dst.read_bytes()
    assert hashlib.sha256(dst.read_bytes()).hexdigest() == tb[name.display]["digest"]
    for layer in manifest.layers + [manifest.config]:
        blob = b.root / "blobs" / f"sha256-{layer.digest[7:]}"
        assert blob.read_bytes() == (a.root / "blobs" / blob.name).read_bytes()
    assert sorted(p.name for p in (b.root / "blobs").iterdir()) == sorted(
        f"sha256-{l.digest[7:]}" for l in manifest.layers + [manifest.config])


def test_pushing_again_skips_every_blob(registry, corral_factory):
    a = corral_factory("a")
    name, manifest = make_model(a.root, f"{registry.host}/team/again:latest")
    ndjson(a.url, "/api/push", {"model": name.display, "insecure": True})
    lines = ndjson(a.url, "/api/push", {"model": name.display, "insecure": True})
    blob_lines = [l for l in lines if "digest" in l]
    assert len(blob_lines) == 2  # one line per blob, complete at once
    assert all(l["completed"] == l["total"] for l in blob_lines)


def test_official_client_pull_and_push(registry, tmp_path, corral_factory, proxy_factory):
    a, b = corral_factory("a"), corral_factory("b")
    name, manifest = make_model(a.root, f"{registry.host}/lib/official:1")
    ca, cb = ollama.Client(host=a.url), ollama.Client(host=b.url)

    result = ca.push(name.display, insecure=True)
    assert result.status == "success"
    parts = list(ca.push(name.display, insecure=True, stream=True))
    assert parts[0].status == "retrieving manifest" and parts[-1].status == "success"

    proxy = proxy_factory(registry.host, rate=8_000_000)  # slow enough for progress lines
    via = f"{proxy.host}/lib/official:1"
    parts = list(cb.pull(via, insecure=True, stream=True))
    assert parts[0].status == "pulling manifest" and parts[-1].status == "success"
    model = manifest.layers[0]
    progress = [p for p in parts if p.digest == model.digest]
    assert len(progress) >= 2 and progress[-1].completed == model.size == progress[-1].total
    assert [p.completed or 0 for p in progress] == sorted(p.completed or 0 for p in progress)

    assert cb.pull(f"{registry.host}/lib/official:1", insecure=True).status == "success"
    listed = {m.model: m for m in cb.list().models}
    assert listed[via].digest == listed[f"{registry.host}/lib/official:1"].digest


def test_pull_skips_layers_already_present(registry, tmp_path, corral_factory, proxy_factory):
    name, manifest, _ = seed_registry(tmp_path, registry.host, "team/skip:latest")
    b = corral_factory("b")
    proxy = proxy_factory(registry.host)
    ndjson(b.url, "/api/pull", {"model": f"{proxy.host}/team/skip:latest", "insecure": True})
    fetched = proxy.blob_bytes
    assert fetched == sum(l.size for l in manifest.layers + [manifest.config])
    lines = ndjson(b.url, "/api/pull", {"model": f"{proxy.host}/team/skip:latest", "insecure": True})
    assert proxy.blob_bytes == fetched
    blob_lines = [l for l in lines if "digest" in l]
    assert len(blob_lines) == 2 and all(l["completed"] == l["total"] for l in blob_lines)


def test_pull_of_a_new_tag_version_removes_unused_layers(registry, tmp_path, corral_factory):
    b = corral_factory("b")
    _, old, _ = seed_registry(tmp_path, registry.host, "team/evolving:latest", seed=1)
    lines = ndjson(b.url, "/api/pull", {"model": f"{registry.host}/team/evolving:latest", "insecure": True})
    assert "removing unused layers" not in [l["status"] for l in lines]
    _, new, _ = seed_registry(tmp_path / "v2", registry.host, "team/evolving:latest", seed=2)
    lines = ndjson(b.url, "/api/pull", {"model": f"{registry.host}/team/evolving:latest", "insecure": True})
    statuses = [l["status"] for l in lines]
    assert statuses[-2:] == ["removing unused layers", "success"]
    assert not (b.root / "blobs" / f"sha256-{old.layers[0].digest[7:]}").exists()
    assert (b.root / "blobs" / f"sha256-{new.layers[0].digest[7:]}").exists()


def test_stream_false_gives_one_object(registry, tmp_path, corral_factory):
    seed_registry(tmp_path, registry.host, "team/once:latest")
    b = corral_factory("b")
    reply = requests.post(f"{b.url}/api/pull", timeout=60,
                          json={"model": f"{registry.host}/team/once:latest", "insecure": True, "stream": False})
    assert reply.status_code == 200 and reply.json() == {"status": "success"}


def test_concurrent_pulls_of_one_model_share_one_download(registry, tmp_path, corral_factory, proxy_factory,
                                                          monkeypatch):
    monkeypatch.setenv("CORRAL_REGISTRY_PART_SIZE", "1000000")
    size = 6_000_000
    _, manifest, _ = seed_registry(tmp_path, registry.host, "team/shared:latest", size=size)
    proxy = proxy_factory(registry.host, rate=3_000_000)
    b = corral_factory("b")
    results = []

    def pull():
        results.append(ndjson(b.url, "/api/pull", {"model": f"{proxy.host}/team/shared:latest", "insecure": True}))

    threads = [threading.Thread(target=pull) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(results) == 3 and all(r[-1] == {"status": "success"} for r in results)
    # each blob crossed the wire once, although three pulls asked for it
    assert proxy.blob_bytes == size + manifest.config.size


def test_pulls_of_different_models_run_concurrently(registry, tmp_path, corral_factory, proxy_factory,
                                                    monkeypatch):
    monkeypatch.setenv("CORRAL_REGISTRY_STREAMS", "1")
    size, rate = 3_000_000, 2_000_000
    for i in range(2):
        seed_registry(tmp_path / str(i), registry.host, f"team/par{i}:latest", size=size, seed=10 + i)
    proxy = proxy_factory(registry.host, rate=rate)
    b = corral_factory("b")
    started = time.monotonic()
    threads = [threading.Thread(target=ndjson, args=(b.url, "/api/pull",
                                                     {"model": f"{proxy.host}/team/par{i}:latest",
                                                      "insecure": True})) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    elapsed = time.monotonic() - started
    assert {f"{proxy.host}/team/par{i}:latest" for i in range(2)} <= set(tags(b.url))
    assert elapsed < 1.6 * size / rate  # one after the other would take 2x


@pytest.mark.parametrize("path,body,text", [
    ("/api/pull", {}, "invalid model name"),
    ("/api/pull", {"model": ""}, "invalid model name"),
    ("/api/pull", {"model": "bad name!"}, "invalid model name"),
    ("/api/push", {"insecure": True}, "model is required"),
])
def test_rest_validation(shim, path, body, text):
    reply = requests.post(f"{shim.url}{path}", json=body, timeout=10)
    assert reply.status_code == 400 and reply.json() == {"error": text}


def test_push_of_a_missing_model(registry, shim):
    lines = ndjson(shim.url, "/api/push", {"model": f"{registry.host}/team/none:latest", "insecure": True})
    assert lines[0] == {"status": "retrieving manifest"}
    assert lines[1] == {"status": "couldn't retrieve manifest"}
    assert lines[2]["error"].startswith("open ") and lines[2]["error"].endswith(": no such file or directory")


def test_large_blobs_are_pushed_in_chunks(registry, corral_factory, proxy_factory, monkeypatch):
    monkeypatch.setenv("CORRAL_REGISTRY_PART_SIZE", "1000000")
    proxy = proxy_factory(registry.host)
    a, b = corral_factory("a"), corral_factory("b")
    name, manifest = make_model(a.root, f"{proxy.host}/team/chunky:latest", size=3_500_000)
    lines = ndjson(a.url, "/api/push", {"model": name.display, "insecure": True})
    assert lines[-1] == {"status": "success"}
    assert proxy.methods.count("PATCH") == 4  # 3.5 MB in 1 MB chunks; the small config goes in one PUT
    lines = ndjson(b.url, "/api/pull", {"model": name.display, "insecure": True})
    assert lines[-1] == {"status": "success"}
    blob = f"sha256-{manifest.layers[0].digest[7:]}"
    assert (b.root / "blobs" / blob).read_bytes() == (a.root / "blobs" / blob).read_bytes()


def test_grpc_pull_and_push(registry, server):
    import grpc

    from corral.protos.ollama.v1 import ollama_pb2 as pb

    name, manifest = make_model(server.root, f"{registry.host}/team/grpc:latest")
    pushed = list(server.stub.Push(pb.PushRequest(model=name.display, insecure=True)))
    assert pushed[0].status == "retrieving manifest" and pushed[-1].status == "success"
    server.stub.Delete(pb.DeleteRequest(model=name.display))
    pulled = list(server.stub.Pull(pb.PullRequest(model=name.display, insecure=True)))
    assert [p.status for p in pulled][-3:] == ["verifying sha256 digest", "writing manifest", "success"]
    model = [p for p in pulled if p.digest == manifest.layers[0].digest]
    assert model[-1].total == model[-1].completed == manifest.layers[0].size

    with pytest.raises(grpc.RpcError) as missing:
        list(server.stub.Pull(pb.PullRequest(model=f"{registry.host}/team/absent", insecure=True)))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    assert missing.value.details() == "pull model manifest: file does not exist"
    with pytest.raises(grpc.RpcError) as invalid:
        list(server.stub.Pull(pb.PullRequest(model="a//b")))
    assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert invalid.value.details() == "invalid model name"


def test_create_from_a_missing_base_pulls_it(registry, tmp_path, shim):
    from tests.gguf_models import write_llama_gguf

    gguf = write_llama_gguf(tmp_path / "base.gguf")
    base, manifest, _ = seed_registry(tmp_path, registry.host, "team/base:latest", gguf=gguf)
    lines = ndjson(shim.url, "/api/create", {"model": "derived", "from": base.display, "insecure": True,
                                             "system": "You are terse."})
    statuses = [l.get("status") for l in lines]
    assert "pulling manifest" in statuses and statuses[-1] == "success", lines
    assert {"derived:latest", base.display} <= set(tags(shim.url))


def test_blobs_redirected_to_another_host(registry, tmp_path, shim, proxy_factory):
    _, manifest, _ = seed_registry(tmp_path, registry.host, "team/cdn:latest")
    cdn = proxy_factory(registry.host)
    front = proxy_factory(registry.host, redirect=cdn.host)
    lines = ndjson(shim.url, "/api/pull", {"model": f"{front.host}/team/cdn:latest", "insecure": True})
    assert lines[-1] == {"status": "success"}
    assert front.blob_bytes == 0 and cdn.blob_bytes == sum(l.size for l in manifest.layers + [manifest.config])
