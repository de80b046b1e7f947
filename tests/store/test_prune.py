"""Blob lifetime (spec §7): startup prune, its grace period and NOPRUNE, resumable downloads, pins.

Why: pruning is the one place that deletes data; it must remove what nothing uses, never what a manifest
(even an unparsable one) or a create in progress references, and keep interrupted downloads resumable.
"""

import os
import time

import pytest

from corral.store.prune import noprune, partial_digest
from tests.store.store_helpers import make_model, manifest_path, set_mtime, store  # noqa: F401

OLD = time.time() - 7200


def age_all(store):
    for name in os.listdir(store.paths.blobs_dir):
        set_mtime(store.paths.blobs_dir / name, OLD)


def test_startup_prune(store, tmp_path):
    make_model(store, tmp_path, "keep")
    live = set(os.listdir(store.paths.blobs_dir))
    orphan = store.blobs.write_bytes(b"orphan upload")
    fresh_orphan = store.blobs.write_bytes(b"uploaded a minute ago")
    downloading = "sha256:" + "a" * 64
    store.paths.partial(downloading).write_bytes(b"\0" * 10)
    store.paths.partial_part(downloading, 0).write_text('{"N":0,"Offset":0,"Size":10,"Completed":4}')
    stale = store.blobs.write_bytes(b"finished download")  # its -partial files are leftovers
    store.paths.partial(stale).write_bytes(b"x")
    store.paths.partial_part(stale, 1).write_bytes(b"{}")
    (store.paths.blobs_dir / "sha256-123456789").write_bytes(b"crashed temp file")
    (store.paths.blobs_dir / "junk.txt").write_bytes(b"junk")
    (store.paths.manifests_dir / "empty/dirs/here").mkdir(parents=True)
    age_all(store)
    set_mtime(store.blobs.path(fresh_orphan), time.time() - 60)

    removed = store.startup_prune()

    remaining = set(os.listdir(store.paths.blobs_dir))
    assert live <= remaining
    assert remaining - live == {
        store.paths.partial(downloading).name, store.paths.partial_part(downloading, 0).name,
        store.blobs.path(fresh_orphan).name}
    assert set(removed) == {store.blobs.path(orphan).name, store.blobs.path(stale).name,
                            store.paths.partial(stale).name, store.paths.partial_part(stale, 1).name,
                            "sha256-123456789", "junk.txt"}
    assert os.listdir(store.paths.manifests_dir) == ["registry.ollama.ai"]


def test_startup_prune_skipped_with_noprune_or_corrupt_manifest(store, tmp_path, monkeypatch):
    make_model(store, tmp_path, "keep")
    orphan = store.blobs.write_bytes(b"orphan")
    age_all(store)
    monkeypatch.setenv("OLLAMA_NOPRUNE", "1")
    assert store.startup_prune() == [] and store.blobs.has(orphan)
    monkeypatch.delenv("OLLAMA_NOPRUNE")
    path = manifest_path(store, "registry.ollama.ai", "library", "broken", "latest")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"{not json")
    assert store.startup_prune() == [] and store.blobs.has(orphan)
    path.unlink()
    assert store.startup_prune() == [store.blobs.path(orphan).name]


def test_startup_prune_renames_legacy_blob_names(store):
    digest = store.blobs.write_bytes(b"legacy")
    legacy = store.paths.blobs_dir / digest  # "sha256:<hex>"
    os.rename(store.blobs.path(digest), legacy)
    store.startup_prune(grace_seconds=3600)
    assert store.blobs.has(digest) and not legacy.exists()


@pytest.mark.parametrize("value,expected", [
    ("", False), ("0", False), ("false", False), ("F", False), ("1", True), ("true", True),
    ("'1'", True), ("yes", True), (" \"0\" ", False),
])
def test_noprune_parsing(monkeypatch, value, expected):
    monkeypatch.setenv("OLLAMA_NOPRUNE", value)
    assert noprune() is expected


def test_partial_digest():
    hex64 = "b" * 64
    assert partial_digest(f"sha256-{hex64}-partial") == f"sha256:{hex64}"
    assert partial_digest(f"sha256-{hex64}-partial-12") == f"sha256:{hex64}"
    assert partial_digest(f"sha256-{hex64}-partial-x") is None
    assert partial_digest(f"sha256-{hex64}") is None
    assert partial_digest("sha256-12-partial") is None


def test_pins_defer_and_then_complete_a_prune(store):
    digest = store.blobs.write_bytes(b"about to be referenced")
    with store.pinned([digest]):
        with store.pinned([digest]):
            assert store.prune([digest]) == []
        assert store.blobs.has(digest)  # still pinned once
    assert not store.blobs.has(digest)  # the deferred prune ran when the last pin went


def test_prune_ignores_non_digests_and_referenced(store, tmp_path):
    make_model(store, tmp_path, "m")
    live = store.blobs.all_digests()
    assert store.prune(list(live) + ["not a digest", ""]) == []
    assert store.blobs.all_digests() == live
