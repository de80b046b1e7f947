"""BlobStore: hash-while-writing, verification, crash-safe install, concurrency, commit_file, digests.

Why: a torn or wrong blob that looks present breaks models silently; these tests pin down that a blob
exists under its name only when complete and verified, and that a failed write leaves nothing behind.
"""

import hashlib
import os
import threading

import pytest

from corral.store.blobs import BUFFER_SIZE, BlobStore, DigestMismatch
from corral.store.config import models_root as default_root
from corral.store.digests import digest_filename, digest_from_filename, find_digests, parse_digest, sha256_digest
from corral.store.errors import InvalidArgument, NotFound
from corral.store.paths import StorePaths


@pytest.fixture
def blobs(tmp_path):
    paths = StorePaths(tmp_path / "models")
    paths.ensure_dirs()
    return BlobStore(paths)


def listing(blobs):
    return sorted(os.listdir(blobs.paths.blobs_dir))


def test_parse_digest():
    hex64 = "ab" * 32
    assert parse_digest(f"sha256:{hex64}") == f"sha256:{hex64}"
    assert parse_digest(f"sha256-{hex64}") == f"sha256:{hex64}"
    assert parse_digest(f"sha256:{hex64.upper()}") == f"sha256:{hex64.upper()}"  # kept as given
    for bad in ("", "sha256:", "sha256:" + "a" * 63, "sha512:" + hex64, "sha256:" + "g" * 64,
                "sha256_" + hex64, " sha256:" + hex64, "sha256:" + hex64 + "0"):
        with pytest.raises(InvalidArgument) as err:
            parse_digest(bad)
        assert err.value.message == "invalid digest format"
    assert digest_filename(f"sha256:{hex64}") == f"sha256-{hex64}"
    assert digest_from_filename(f"sha256-{hex64}") == f"sha256:{hex64}"
    assert digest_from_filename(f"sha256-{hex64}-partial") is None
    assert digest_from_filename("sha256-123456") is None
    assert sha256_digest(b"") == "sha256:" + hashlib.sha256(b"").hexdigest()
    assert find_digests(f'x "sha256:{hex64}" sha256-{"cd" * 32}'.encode()) == {
        f"sha256:{hex64}", f"sha256:{'cd' * 32}"}


def test_paths_and_default_root(tmp_path, monkeypatch):
    paths = StorePaths(tmp_path)
    d = "sha256:" + "ab" * 32
    assert paths.blob(d) == tmp_path / "blobs" / ("sha256-" + "ab" * 32)
    assert paths.partial(d).name == "sha256-" + "ab" * 32 + "-partial"
    assert paths.partial_part(d, 3).name == "sha256-" + "ab" * 32 + "-partial-3"
    tmp = paths.temp_blob()
    assert tmp.parent == paths.blobs_dir and tmp.name.startswith("sha256-")
    assert digest_from_filename(tmp.name) is None  # a temp file never looks like a finished blob
    monkeypatch.setenv("OLLAMA_MODELS", " '/srv/models' ")
    assert default_root() == tmp_path.__class__("/srv/models")
    monkeypatch.delenv("OLLAMA_MODELS")
    assert default_root() == tmp_path.__class__(os.path.expanduser("~/.ollama/models"))


@pytest.mark.parametrize("size", [0, 1, 1000, BUFFER_SIZE - 1, BUFFER_SIZE, 3 * BUFFER_SIZE + 17])
def test_write_hashes_and_installs(blobs, size):
    data = os.urandom(size)
    chunks = [data[i:i + 65536] for i in range(0, len(data), 65536)] or [b""]
    digest, created = blobs.write(chunks)
    assert digest == sha256_digest(data) and created
    assert blobs.has(digest) and blobs.size(digest) == size
    with blobs.open(digest) as f:
        assert f.read() == data
    assert listing(blobs) == [digest_filename(digest)]
    assert (blobs.path(digest).stat().st_mode & 0o777) == 0o644
    assert blobs.write([data]) == (digest, False)
    assert listing(blobs) == [digest_filename(digest)]


def test_write_with_expected_digest(blobs):
    data = b"hello"
    digest, created = blobs.write([data], expected=sha256_digest(data).replace(":", "-"))
    assert (digest, created) == (sha256_digest(data), True)


def test_wrong_digest_leaves_nothing(blobs):
    data = os.urandom(2 * BUFFER_SIZE + 5)
    expected = "sha256:" + "0" * 64
    with pytest.raises(DigestMismatch) as err:
        blobs.write([data], expected=expected)
    actual = sha256_digest(data)
    assert err.value.message == f'digest mismatch, expected "{expected}", got "{actual}"'
    assert err.value.code == "INVALID_ARGUMENT"
    assert listing(blobs) == []


def test_uppercase_expected_always_mismatches(blobs):
    data = b"abc"
    upper = "sha256:" + hashlib.sha256(data).hexdigest().upper()
    with pytest.raises(DigestMismatch):
        blobs.write([data], expected=upper)
    assert listing(blobs) == []


def test_failing_stream_leaves_nothing(blobs):
    def chunks():
        yield os.urandom(BUFFER_SIZE)
        yield os.urandom(BUFFER_SIZE)
        raise ConnectionError("client went away")

    with pytest.raises(ConnectionError):
        blobs.write(chunks())
    assert listing(blobs) == []


def test_reused_producer_buffer_is_hashed_correctly(blobs):
    """A producer that refills one bytearray must not corrupt the hash running on the other thread."""
    buf = bytearray(BUFFER_SIZE)
    expected = hashlib.sha256()

    def chunks():
        for i in range(6):
            buf[:] = bytes([i]) * BUFFER_SIZE
            expected.update(buf)
            yield buf

    digest, _ = blobs.write(chunks())
    assert digest == "sha256:" + expected.hexdigest()
    assert blobs.path(digest).read_bytes()[-1] == 5


def test_concurrent_writers_of_one_digest(blobs):
    data = os.urandom(3 * BUFFER_SIZE)
    results, errors = [], []
    start = threading.Barrier(8)

    def writer():
        try:
            start.wait()
            results.append(blobs.write([data[i:i + 100_000] for i in range(0, len(data), 100_000)]))
        except Exception as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=writer) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    digest = sha256_digest(data)
    assert {d for d, _ in results} == {digest}
    assert sum(created for _, created in results) == 1
    assert listing(blobs) == [digest_filename(digest)]
    assert blobs.path(digest).read_bytes() == data


def test_commit_file(blobs):
    data = os.urandom(BUFFER_SIZE + 3)
    digest = sha256_digest(data)
    partial = blobs.paths.partial(digest)
    partial.write_bytes(data)
    blobs.commit_file(partial, digest)
    assert listing(blobs) == [digest_filename(digest)]
    assert blobs.path(digest).read_bytes() == data


def test_commit_file_mismatch_deletes_the_file(blobs):
    partial = blobs.paths.partial("sha256:" + "1" * 64)
    partial.write_bytes(b"corrupt")
    with pytest.raises(DigestMismatch) as err:
        blobs.commit_file(partial, "sha256:" + "1" * 64)
    assert err.value.message == ("digest mismatch, file must be downloaded again: want sha256:" + "1" * 64
                                 + ", got " + sha256_digest(b"corrupt"))
    assert listing(blobs) == []


def test_import_file_from_elsewhere(blobs, tmp_path):
    outside = tmp_path / "quantized.gguf"
    outside.write_bytes(b"GGUF-ish")
    digest, created = blobs.import_file(outside)
    assert digest == sha256_digest(b"GGUF-ish") and created
    assert not outside.exists()
    assert listing(blobs) == [digest_filename(digest)]


def test_missing_blob_and_delete(blobs):
    d = "sha256:" + "2" * 64
    assert not blobs.has(d)
    with pytest.raises(NotFound) as err:
        blobs.open(d)
    assert err.value.message == f'blob "{d}" not found'
    with pytest.raises(NotFound):
        blobs.size(d)
    assert blobs.delete(d) is False
    digest = blobs.write_bytes(b"x")
    assert blobs.all_digests() == {digest}
    assert blobs.delete(digest) is True
    assert blobs.all_digests() == set()


def test_all_digests_ignores_other_files(blobs):
    digest = blobs.write_bytes(b"y")
    (blobs.paths.blobs_dir / "sha256-123").write_bytes(b"")
    blobs.paths.partial("sha256:" + "3" * 64).write_bytes(b"")
    assert blobs.all_digests() == {digest}
