"""The manifest index behind list, show, model_spec and delete (store/index.py): cached, never stale.

Why: the listing, the loaded models and the blob users are cached so that a request costs stats instead
of reads, but another process (a second Corral, Ollama itself) may change the same store at any moment.
Each test changes the store through a second ModelStore on the same root, or behind the store's back
through the file system, and checks that the first store sees the change at once: no sleeping, changes
within one timestamp tick, in-place rewrites that keep size and mtime, and that a blob some manifest
still references is never pruned, whoever wrote that manifest.
"""

import json
import os

import pytest

from corral.service.show import show
from corral.store import index as index_mod
from corral.store.errors import NotFound
from corral.store.models import ModelStore
from tests.store.store_helpers import create, llama_blob, make_model, manifest_path, store  # noqa: F401

LIB = ("registry.ollama.ai", "library")


def names(store):
    return sorted(m["name"] for m in store.list_models())


@pytest.fixture
def other(store):
    """A second store on the same root: another process, as far as the first one's caches know."""
    return ModelStore(store.paths.root)


@pytest.fixture
def reads(monkeypatch):
    """Counts manifest reads by every index."""
    count = {"n": 0}
    real = index_mod.ManifestIndex._read

    def counting(self, path, name):
        count["n"] += 1
        return real(self, path, name)

    monkeypatch.setattr(index_mod.ManifestIndex, "_read", counting)
    return count


def test_list_sees_another_stores_create_copy_and_delete_at_once(store, other, tmp_path):
    assert store.list_models() == []
    make_model(other, tmp_path, "a")
    assert names(store) == ["a:latest"]
    other.copy("a", "ns/b:v1")
    other.copy("a", "a:other-tag")  # a new tag in an existing model directory
    assert names(store) == ["a:latest", "a:other-tag", "ns/b:v1"]
    other.delete("a")
    assert names(store) == ["a:other-tag", "ns/b:v1"]
    other.delete("ns/b:v1")  # its namespace directory goes too
    assert names(store) == ["a:other-tag"]


def test_show_and_spec_see_another_stores_overwrite_at_once(store, other, tmp_path):
    make_model(store, tmp_path, "m", system="first")
    assert show(store, "m")["system"] == "first"
    assert store.model_spec("m").system == "first"
    create(other, {"model": "m", "from": "m", "system": "second"})
    assert show(store, "m")["system"] == "second"
    assert store.model_spec("m").system == "second"
    assert store.list_models()[0]["digest"] == other.list_models()[0]["digest"]
    other.delete("m")
    with pytest.raises(NotFound):
        show(store, "m")
    with pytest.raises(NotFound):
        store.model_spec("m")


def test_in_place_rewrite_with_the_same_size_and_mtime_is_seen(store, tmp_path):
    """An old Ollama writes manifests in place; a rewrite within one timestamp tick, or one whose mtime
    is put back, still changes ctime, and a fresh file is read again until it has settled."""
    make_model(store, tmp_path, "a", system="aaaa")
    make_model(store, tmp_path, "b", system="bbbb")
    path_a = manifest_path(store, *LIB, "a", "latest")
    raw_b = manifest_path(store, *LIB, "b", "latest").read_bytes()
    before = {m["name"]: m["digest"] for m in store.list_models()}
    assert show(store, "a")["system"] == "aaaa"
    st = path_a.stat()
    assert len(raw_b) == st.st_size  # same length: only the content tells them apart
    with open(path_a, "r+b") as f:  # same inode, same size
        f.write(raw_b)
    os.utime(path_a, ns=(st.st_atime_ns, st.st_mtime_ns))  # and the old mtime
    after = {m["name"]: m["digest"] for m in store.list_models()}
    assert after["a:latest"] == before["b:latest"] != before["a:latest"]
    assert show(store, "a")["system"] == "bbbb"


def test_settled_entries_are_not_read_again(store, tmp_path, reads, monkeypatch):
    monkeypatch.setattr(index_mod, "SETTLE_NS", -10**18)  # everything counts as settled at once
    make_model(store, tmp_path, "a")
    for i in range(20):
        store.copy("a", f"copy-{i}")
    first = store.list_models()
    assert reads["n"] == 21
    assert store.list_models() is first  # the same list: nothing changed
    assert reads["n"] == 21
    store.copy("a", "one-more")
    assert len(store.list_models()) == 22 and reads["n"] == 22  # only the new manifest is read


def test_unsettled_entries_are_read_again(store, tmp_path, reads, monkeypatch):
    monkeypatch.setattr(index_mod, "SETTLE_NS", 10**18)  # nothing ever settles: every refresh re-reads
    make_model(store, tmp_path, "a")
    first = store.list_models()
    n = reads["n"]
    assert store.list_models() is first  # re-read, found unchanged: still the same listing
    assert reads["n"] == n + 1


@pytest.mark.parametrize("settle_ns", [-10**18, 10**18], ids=["settled", "fresh"])
def test_delete_of_one_of_many_copies_reads_no_other_manifest(store, tmp_path, reads, monkeypatch, settle_ns):
    monkeypatch.setattr(index_mod, "SETTLE_NS", settle_ns)
    make_model(store, tmp_path, "a")
    for i in range(30):
        store.copy("a", f"copy-{i}")
    store.list_models()
    blobs = store.blobs.all_digests()
    before = reads["n"]
    store.delete("copy-7")
    # a user of each shared blob is confirmed by a stat (settled) or by reading that one user (fresh)
    assert reads["n"] - before <= (0 if settle_ns < 0 else len(blobs))
    assert store.blobs.all_digests() == blobs
    assert "copy-7:latest" not in names(store)


def test_delete_keeps_blobs_another_store_just_referenced(store, other, tmp_path):
    """The first store's index has never seen `b`; deleting `a` must still keep the blobs `b` uses."""
    make_model(store, tmp_path, "a")
    store.list_models()
    blobs = store.blobs.all_digests()
    other.copy("a", "b")
    store.delete("a")
    assert store.blobs.all_digests() == blobs
    assert names(store) == ["b:latest"]
    show(store, "b")


def test_delete_prunes_blobs_whose_other_user_another_store_deleted(store, other, tmp_path):
    """The first store's index still lists `b` as a user; it is gone on disk, so the blobs go."""
    make_model(store, tmp_path, "a")
    store.copy("a", "b")
    store.list_models()
    other.delete("b")  # its blobs stay: `a` uses them
    assert store.blobs.all_digests()
    store.delete("a")
    assert store.blobs.all_digests() == set()


def test_delete_keeps_blobs_of_a_manifest_rewritten_behind_the_index(store, tmp_path):
    make_model(store, tmp_path, "a", system="one")
    make_model(store, tmp_path, "b", system="two")
    store.list_models()
    path_b = manifest_path(store, *LIB, "b", "latest")
    raw_a = manifest_path(store, *LIB, "a", "latest").read_bytes()
    with open(path_b, "r+b") as f:  # b now names a's blobs (and only those), in place
        f.write(raw_a)
        f.truncate()
    kept = {l["digest"] for l in json.loads(raw_a)["layers"]} | {json.loads(raw_a)["config"]["digest"]}
    store.delete("a")
    assert kept <= store.blobs.all_digests()


def test_unreadable_manifest_stops_pruning(store, tmp_path, monkeypatch):
    make_model(store, tmp_path, "a")
    make_model(store, tmp_path, "b", system="own blobs")
    path_b = manifest_path(store, *LIB, "b", "latest")
    real_open = open

    def refusing(path, *args, **kwargs):
        if os.fspath(path) == os.fspath(path_b):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr("builtins.open", refusing)
    blobs = store.blobs.all_digests()
    store.delete("a")  # b might reference anything: nothing is pruned
    assert store.blobs.all_digests() == blobs
    monkeypatch.setattr("builtins.open", real_open)
    assert names(store) == ["b:latest"]


def test_concurrent_listings_share_walks(store, tmp_path):
    import threading

    make_model(store, tmp_path, "a")
    results, threads = [], []
    for _ in range(8):
        t = threading.Thread(target=lambda: results.append(names(store)))
        threads.append(t)
        t.start()
    for t in threads:
        t.join()
    assert results == [["a:latest"]] * 8


def test_invalid_names_and_temp_files_are_not_listed(store, tmp_path):
    make_model(store, tmp_path, "a")
    bad = store.paths.manifests_dir / "registry.ollama.ai" / "library" / "a" / "bad name"
    bad.write_bytes(b"{}")
    (bad.parent / ".tmp-latest-123").write_bytes(b"{}")
    (store.paths.manifests_dir / "stray-file").write_bytes(b"{}")
    assert names(store) == ["a:latest"]
    bad.unlink()
    assert names(store) == ["a:latest"]
