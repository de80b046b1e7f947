"""Manifests: byte layout, parsing, case-insensitive resolve, atomic writes, delete, and listing rules.

Why: the manifest bytes are the model digest that tags and ps report, and listing rules decide which
files are models at all; both must match Ollama's so an existing Ollama store reads the same here.
"""

import hashlib
import json
import os
import threading

import pytest

from corral.store.errors import Internal, NotFound
from corral.store.gocompat import go_json
from corral.store.manifests import (
    MEDIA_TYPE_CONFIG,
    MEDIA_TYPE_MANIFEST,
    MEDIA_TYPE_MODEL,
    MEDIA_TYPE_PARAMS,
    Layer,
    Manifest,
    ManifestStore,
)
from corral.store.names import parse_name
from corral.store.paths import StorePaths

D1, D2, D3 = ("sha256:" + c * 64 for c in "123")


@pytest.fixture
def manifests(tmp_path):
    paths = StorePaths(tmp_path / "models")
    paths.ensure_dirs()
    return ManifestStore(paths)


def sample() -> Manifest:
    return Manifest(Layer(MEDIA_TYPE_CONFIG, D1, 485),
                    [Layer(MEDIA_TYPE_MODEL, D2, 2019377376, "llama3.2:latest"), Layer(MEDIA_TYPE_PARAMS, D3, 96)])


def test_to_bytes_is_ollamas_layout():
    expected = (
        '{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json",'
        f'"config":{{"mediaType":"application/vnd.docker.container.image.v1+json","digest":"{D1}","size":485}},'
        f'"layers":[{{"mediaType":"application/vnd.ollama.image.model","digest":"{D2}","size":2019377376,'
        f'"from":"llama3.2:latest"}},{{"mediaType":"application/vnd.ollama.image.params","digest":"{D3}",'
        '"size":96}]}\n')
    assert sample().to_bytes().decode() == expected


def test_from_bytes_round_trip_and_extras():
    m = sample()
    assert Manifest.from_bytes(m.to_bytes()) == m
    doc = json.loads(m.to_bytes())
    doc["layers"][1]["name"] = "model.safetensors"
    doc["annotations"] = {"x": "y"}  # unknown keys are ignored
    parsed = Manifest.from_bytes(json.dumps(doc, indent=2).encode())
    assert parsed.layers[1].name == "model.safetensors"
    assert parsed.all_digests() == [D2, D3, D1]
    assert parsed.size == 485 + 2019377376 + 96
    assert parsed.first(MEDIA_TYPE_MODEL).from_ == "llama3.2:latest"
    assert parsed.media_type == MEDIA_TYPE_MANIFEST
    for bad in (b"", b"not json", b"[]", b'{"layers":[]}', b'{"config":{"size":1},"layers":[]}',
                b'{"config":{"digest":"x","size":"1"},"layers":[]}', b"\xff"):
        with pytest.raises(ValueError):
            Manifest.from_bytes(bad)


def test_go_json_escapes_like_go():
    assert go_json({"stop": ["<|eot_id|>", "a&b"], "t": 0.7, "n": 4096.0}, sort_keys=True) == \
        b'{"n":4096,"stop":["\\u003c|eot_id|\\u003e","a\\u0026b"],"t":0.7}\n'
    assert go_json([1e-05, 1e-07, 1e21, 1.5e300, 0.0, -2.5, True, None, "\u2028é"]) == \
        '[0.00001,1e-7,1e+21,1.5e+300,0,-2.5,true,null,"\\u2028é"]\n'.encode()
    assert go_json({"b": 1, "a": {"d": 1, "c": 2}}) == b'{"b":1,"a":{"d":1,"c":2}}\n'
    assert go_json({"b": 1, "a": {"d": 1, "c": 2}}, sort_keys=True) == b'{"a":{"c":2,"d":1},"b":1}\n'


def test_write_read_digest_exists(manifests):
    name = parse_name("m")
    assert not manifests.exists(name)
    with pytest.raises(NotFound):
        manifests.read(name)
    manifests.write(name, sample())
    path = manifests.paths.manifests_dir / "registry.ollama.ai" / "library" / "m" / "latest"
    assert path.read_bytes() == sample().to_bytes()
    assert (path.stat().st_mode & 0o777) == 0o644
    manifest, raw, mtime_ns = manifests.read(name)
    assert manifest == sample() and raw == sample().to_bytes() and mtime_ns == path.stat().st_mtime_ns
    assert manifests.digest(name) == hashlib.sha256(raw).hexdigest()
    manifests.write(name, b'{"pulled": "bytes kept verbatim"}')
    assert path.read_bytes() == b'{"pulled": "bytes kept verbatim"}'
    with pytest.raises(Internal):
        manifests.read(name)
    assert sorted(os.listdir(path.parent)) == ["latest"]  # no temp file left


def test_resolve_canonicalises_each_part(manifests):
    manifests.write(parse_name("Example.com/User/Llama3.2:Q4"), sample())
    manifests.write(parse_name("llama3.2:latest"), sample())
    cases = {
        "llama3.2:LATEST": ("registry.ollama.ai", "library", "llama3.2", "latest"),
        "LLAMA3.2": ("registry.ollama.ai", "library", "llama3.2", "latest"),
        "example.com/user/llama3.2:q4": ("Example.com", "User", "Llama3.2", "Q4"),
        "EXAMPLE.COM/USER/other:q4": ("Example.com", "User", "other", "q4"),
        "example.com/nobody/LLAMA3.2:q4": ("Example.com", "nobody", "LLAMA3.2", "q4"),
        "new:Tag": ("registry.ollama.ai", "library", "new", "Tag"),
    }
    for text, parts in cases.items():
        assert manifests.resolve(parse_name(text)).parts == parts, text
    invalid = parse_name("a/b/c/d")
    assert manifests.resolve(invalid) == invalid


def test_delete_removes_empty_dirs_only(manifests):
    manifests.write(parse_name("h.com/ns/a:1"), sample())
    manifests.write(parse_name("h.com/ns/a:2"), sample())
    manifests.write(parse_name("h.com/ns/b:1"), sample())
    root = manifests.paths.manifests_dir
    manifests.delete(parse_name("h.com/ns/a:1"))
    assert (root / "h.com/ns/a").is_dir()
    manifests.delete(parse_name("h.com/ns/a:2"))
    assert not (root / "h.com/ns/a").exists() and (root / "h.com/ns/b").is_dir()
    manifests.delete(parse_name("h.com/ns/b:1"))
    assert os.listdir(root) == []
    with pytest.raises(NotFound):
        manifests.delete(parse_name("h.com/ns/b:1"))


def test_list_counts_only_valid_files_four_levels_deep(manifests, caplog):
    root = manifests.paths.manifests_dir
    manifests.write(parse_name("m:1"), sample())
    manifests.write(parse_name("ns/m:2"), sample())
    (root / "registry.ollama.ai/library/m/.tmp-1-123").write_bytes(b"in progress")
    (root / "registry.ollama.ai/library/m/bad tag").write_bytes(b"{}")
    (root / "registry.ollama.ai/library/m/deeper").mkdir()
    (root / "registry.ollama.ai/library/m/deeper/x").write_bytes(b"{}")
    (root / "registry.ollama.ai/library/stray").write_bytes(b"{}")
    (root / "toplevel").write_bytes(b"{}")
    (root / "registry.ollama.ai/library/corrupt").mkdir()
    (root / "registry.ollama.ai/library/corrupt/latest").write_bytes(b"not json")  # listed; read fails
    names = [n.display for n, _ in manifests.list()]
    assert names == ["corrupt:latest", "m:1", "ns/m:2"]
    assert "bad tag" in caplog.text


def test_prune_empty_dirs(manifests):
    root = manifests.paths.manifests_dir
    (root / "a/b/c").mkdir(parents=True)
    manifests.write(parse_name("m"), sample())
    manifests.prune_empty_dirs()
    assert sorted(os.listdir(root)) == ["registry.ollama.ai"]


def test_concurrent_write_and_delete_of_siblings(manifests):
    """A delete pruning directories must not make a concurrent write in the same folder fail."""
    errors = []

    def churn(tag):
        try:
            for _ in range(50):
                manifests.write(parse_name(f"m:{tag}"), sample())
                manifests.delete(parse_name(f"m:{tag}"))
        except Exception as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=churn, args=(t,)) for t in ("a", "b", "c")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
