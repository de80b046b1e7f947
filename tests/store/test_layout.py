"""The on-disk layout the store writes is exactly Ollama's (spec §3, §4): walk the tree and compare.

Why: Corral must be able to serve an existing Ollama models folder and leave one behind that Ollama can
read; any extra file, different name, mode or JSON byte would break that.
"""

import json
import os

from corral.store.digests import digest_filename
from corral.store.manifests import MEDIA_TYPE_CONFIG, MEDIA_TYPE_MANIFEST, MEDIA_TYPE_MODEL, MEDIA_TYPE_SYSTEM
from corral.store.models import ModelStore
from tests.store.store_helpers import llama_blob, make_model, sha256_hex, store  # noqa: F401


def walk(root):
    """{relative path: 'dir' | bytes} for everything under root."""
    tree = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            tree[os.path.relpath(os.path.join(dirpath, d), root)] = "dir"
        for f in filenames:
            path = os.path.join(dirpath, f)
            tree[os.path.relpath(path, root)] = open(path, "rb").read()
    return tree


def test_store_has_exactly_the_ollama_layout(store, tmp_path):
    model = llama_blob(store, tmp_path)
    make_model(store, tmp_path, "tiny", system="hello")
    store.copy("tiny", "example.com/team/tiny:v1")
    system = "sha256:" + sha256_hex(b"hello")
    config = (
        '{"model_format":"gguf","model_family":"llama","model_families":["llama"],'
        f'"model_type":"{json.loads(store.blobs.path(_config(store)).read_bytes())["model_type"]}",'
        '"file_type":"F32","architecture":"amd64","os":"linux",'
        f'"rootfs":{{"type":"layers","diff_ids":["{model}","{system}"]}}}}\n').encode()
    config_digest = "sha256:" + sha256_hex(config)
    manifest = (
        f'{{"schemaVersion":2,"mediaType":"{MEDIA_TYPE_MANIFEST}",'
        f'"config":{{"mediaType":"{MEDIA_TYPE_CONFIG}","digest":"{config_digest}","size":{len(config)}}},'
        f'"layers":[{{"mediaType":"{MEDIA_TYPE_MODEL}","digest":"{model}","size":{store.blobs.size(model)}}},'
        f'{{"mediaType":"{MEDIA_TYPE_SYSTEM}","digest":"{system}","size":5}}]}}\n').encode()
    expected = {
        "blobs": "dir",
        f"blobs/{digest_filename(model)}": store.blobs.path(model).read_bytes(),
        f"blobs/{digest_filename(system)}": b"hello",
        f"blobs/{digest_filename(config_digest)}": config,
        "manifests": "dir",
        "manifests/registry.ollama.ai": "dir",
        "manifests/registry.ollama.ai/library": "dir",
        "manifests/registry.ollama.ai/library/tiny": "dir",
        "manifests/registry.ollama.ai/library/tiny/latest": manifest,
        "manifests/example.com": "dir",
        "manifests/example.com/team": "dir",
        "manifests/example.com/team/tiny": "dir",
        "manifests/example.com/team/tiny/v1": manifest,
    }
    assert walk(store.paths.root) == expected

    umask = os.umask(0)
    os.umask(umask)
    for rel, content in expected.items():
        mode = os.stat(store.paths.root / rel).st_mode & 0o777
        assert mode == (0o755 & ~umask if content == "dir" else 0o644), rel

    # A fresh store over the same folder (as after a restart, or over Ollama's own folder) reads it all.
    again = ModelStore(store.paths.root)
    assert sorted(m["name"] for m in again.list_models()) == ["example.com/team/tiny:v1", "tiny:latest"]
    assert {m["digest"] for m in again.list_models()} == {sha256_hex(manifest)}


def _config(store):
    path = store.paths.manifests_dir / "registry.ollama.ai/library/tiny/latest"
    return json.loads(path.read_bytes())["config"]["digest"]
