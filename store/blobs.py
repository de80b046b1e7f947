"""Content-addressed blobs: a file exists under its digest's name only once it is complete and verified.

Why: a blob written straight into `sha256-<hex>` is torn if the process dies mid-write, and a later HEAD
would report it present. So every write goes to a temp file in blobs/ (same filesystem), is hashed while
it is written, verified, fsynced, then linked into place and the directory fsynced. A wrong digest
removes the temp file and leaves nothing behind (unlike Ollama, which keeps the data under its real digest
until a prune). Concurrent writers of one digest each write their own temp file; the first link wins and
the others see FileExistsError and report created=False. A writer holds an flock on its temp file until
it is installed or removed (store/locks.py), so the start-up sweep of any server on the store removes a
temp file as soon as its writer is dead, and never one that is being written. A full disk is reported
with Go's text, "write <file>: no space left on device", and leaves no temp file. A blob we create is
stamped as verified (store/verify.py): its bytes were hashed as they were written.

Hashing and writing overlap: chunks are coalesced into 1 MiB buffers (chunks of that size pass through
uncopied, also read-only views of bytes), and a worker thread hashes a buffer while this thread writes it
(hashlib and file writes both release the GIL on large buffers). With `prefetch`, a third thread pulls
the next chunks from the source (an upload arriving over the network) while the current one is written,
so receiving, hashing and writing all overlap. Writes of less than one buffer hash inline, so small
blobs pay no thread start. What a write holds at once is bounded by the queues: two buffers waiting to be
hashed and two prefetched, whatever the blob's size.
"""

from __future__ import annotations

import hashlib
import os
import queue
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

from corral.store.digests import digest_from_filename, file_digest, parse_digest
from corral.store.errors import InvalidArgument, NotFound, is_disk_full, no_space
from corral.store.locks import create_locked, same_file
from corral.store.paths import FILE_MODE, StorePaths
from corral.store.prefetch import Prefetch
from corral.store.verify import BlobVerifier, hash_fd

BUFFER_SIZE = 1 << 20


class DigestMismatch(InvalidArgument):
    """The data's digest is not the one promised; `expected` and `actual` are `sha256:<hex>`."""

    def __init__(self, expected: str, actual: str, message: str | None = None):
        super().__init__(message or f'digest mismatch, expected "{expected}", got "{actual}"')
        self.expected, self.actual = expected, actual


def fsync_dir(path: Path) -> None:
    """Makes a rename or unlink in `path` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _immutable(chunk) -> bool:
    """bytes, or a read-only view of bytes: nothing can change it while the hash thread reads it."""
    return type(chunk) is bytes or (type(chunk) is memoryview and chunk.readonly and type(chunk.obj) is bytes)


def _coalesce(chunks: Iterable[bytes | memoryview]) -> Iterable[bytes | memoryview]:
    """Yields immutable buffers of at least BUFFER_SIZE (the last may be shorter).

    Copies anything mutable (bytearray, a view of one): a producer may reuse its buffer while the hash
    thread still reads it."""
    pending = bytearray()
    for chunk in chunks:
        if not pending and len(chunk) >= BUFFER_SIZE and _immutable(chunk):
            yield chunk
            continue
        pending += chunk
        if len(pending) >= BUFFER_SIZE:
            yield bytes(pending)
            pending.clear()
    if pending:
        yield bytes(pending)


class _HashWorker:
    """Feeds buffers to a hash on a second thread, in order."""

    _STOP = object()

    def __init__(self, hasher):
        self.hasher = hasher
        self.queue: queue.Queue = queue.Queue(maxsize=2)
        self.thread = threading.Thread(target=self._run, name="blob-hash", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while (buf := self.queue.get()) is not self._STOP:
            self.hasher.update(buf)

    def feed(self, buf: bytes | memoryview) -> None:
        self.queue.put(buf)

    def finish(self) -> None:
        self.queue.put(self._STOP)
        self.thread.join()


def _write_all(fd: int, buf: bytes | memoryview) -> None:
    view = memoryview(buf)
    while view:
        view = view[os.write(fd, view):]


class TempBlob:
    """A fresh temp file in blobs/ held under an flock, for a writer that is not this module (a quantizer or
    converter writes the file at `path`, in place); closing removes what is left of it and unlocks it."""

    def __init__(self, paths: StorePaths):
        self.fd = -1
        try:
            paths.blobs_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
            self.fd, self.path = create_locked(paths.temp_blob, FILE_MODE)
        except OSError as err:
            if is_disk_full(err):
                raise no_space(paths.blobs_dir) from err
            raise

    def close(self) -> None:
        if self.fd >= 0:
            if same_file(self.fd, self.path):  # not yet made a blob (import_file consumes the name)
                self.path.unlink(missing_ok=True)
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> TempBlob:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "fd", -1) >= 0:
            os.close(self.fd)  # dropped unclosed: unlock, the start-up sweep removes the file


class BlobStore:
    """The blobs/ folder of one store."""

    def __init__(self, paths: StorePaths):
        self.paths = paths
        self.verifier = BlobVerifier()

    def path(self, digest: str) -> Path:
        return self.paths.blob(digest)

    def has(self, digest: str) -> bool:
        return self.paths.blob(digest).is_file()

    def size(self, digest: str) -> int:
        try:
            return self.paths.blob(digest).stat().st_size
        except FileNotFoundError:
            raise NotFound(f'blob "{digest}" not found') from None

    def open(self, digest: str) -> BinaryIO:
        try:
            return open(self.paths.blob(digest), "rb")
        except FileNotFoundError:
            raise NotFound(f'blob "{digest}" not found') from None

    def all_digests(self) -> set[str]:
        """Digests of every finished blob (files named exactly sha256-<64 hex>)."""
        try:
            names = os.listdir(self.paths.blobs_dir)
        except FileNotFoundError:
            return set()
        return {d for d in map(digest_from_filename, names) if d is not None}

    def delete(self, digest: str) -> bool:
        """Removes a blob; False if it was not there."""
        try:
            self.paths.blob(digest).unlink()
        except FileNotFoundError:
            return False
        finally:
            self.verifier.forget(parse_digest(digest))
        fsync_dir(self.paths.blobs_dir)
        return True

    # -- verifying (store/verify.py) -------------------------------------------------------------

    def verify(self, digest: str) -> None:
        """Raises verify.Corrupt, naming the digest, unless the blob hashes to its name (hashing only when
        its stamp does not vouch for it); NotFound if it is missing."""
        digest = parse_digest(digest)
        self.verifier.verify(digest, self.paths.blob(digest))

    def intact(self, digest: str) -> bool:
        """True when the blob exists and hashes to its name (a pull re-fetches one that does not)."""
        digest = parse_digest(digest)
        try:
            return self.verifier.check(digest, self.paths.blob(digest)) == digest
        except NotFound:
            return False

    # -- writing ---------------------------------------------------------------------------------

    def temp(self) -> TempBlob:
        """A locked temp file for an outside writer (see TempBlob); import_file() makes it a blob."""
        return TempBlob(self.paths)

    def _create_temp(self) -> tuple[int, Path]:
        self.paths.blobs_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
        fd, tmp = create_locked(self.paths.temp_blob, FILE_MODE)
        os.fchmod(fd, FILE_MODE)  # Ollama chmods blobs 0644 whatever the umask
        return fd, tmp

    def _install(self, tmp: Path, digest: str, fd: int) -> bool:
        """Moves a verified, fsynced temp file (open at `fd`, its bytes hashed to `digest`) to its blob
        name and stamps it verified; False if the blob already existed intact (it is left as it was; a
        damaged one is replaced)."""
        final = self.paths.blob(digest)
        try:
            os.link(tmp, final)  # atomic and exclusive: exactly one concurrent writer creates the blob
            created = True
        except FileExistsError:
            created = not self.intact(digest)
            if created:  # the blob there is damaged: these verified bytes replace it
                os.replace(tmp, final)
        except OSError:  # a filesystem without hard links
            created = not final.exists()
            if created:
                os.replace(tmp, final)
        tmp.unlink(missing_ok=True)
        fsync_dir(self.paths.blobs_dir)
        if created:
            self.verifier.record(digest, fd)
        return created

    def write(self, chunks: Iterable[bytes | memoryview], expected: str | None = None,
              prefetch: bool = False) -> tuple[str, bool]:
        """Stores a stream of bytes; returns (digest, created). Raises DigestMismatch (leaving nothing
        behind) if `expected` is given and differs; ResourceExhausted when the disk is full. `prefetch`
        pulls the chunks on a thread of their own (for a source that waits, such as a network upload)."""
        if expected is not None:
            expected = parse_digest(expected)
        try:
            fd, tmp = self._create_temp()
        except OSError as err:
            if is_disk_full(err):
                raise no_space(self.paths.blobs_dir) from err
            raise
        hasher, worker = hashlib.sha256(), None
        source = Prefetch(chunks, name="blob-prefetch") if prefetch else None
        try:
            try:
                for buf in _coalesce(source if source is not None else chunks):
                    if worker is None and len(buf) >= BUFFER_SIZE:
                        worker = _HashWorker(hasher)
                    if worker is not None:
                        worker.feed(buf)
                    else:
                        hasher.update(buf)
                    _write_all(fd, buf)
                os.fsync(fd)
            finally:
                if source is not None:
                    source.close()
                if worker is not None:
                    worker.finish()
            digest = "sha256:" + hasher.hexdigest()
            if expected is not None and expected != digest:
                raise DigestMismatch(expected, digest)
            return digest, self._install(tmp, digest, fd)
        except OSError as err:
            if is_disk_full(err):
                raise no_space(tmp) from err
            raise
        finally:
            tmp.unlink(missing_ok=True)  # before the lock goes: no sweep ever sees it unlocked
            os.close(fd)

    def write_bytes(self, data: bytes) -> str:
        """Stores some bytes; returns the digest."""
        return self.write([bytes(data)])[0]

    def hash_file(self, path: Path) -> str:
        """`sha256:<hex>` of a file's content."""
        return file_digest(path)

    def commit_file(self, tmp_path: str | os.PathLike, expected: str) -> None:
        """Verifies an already-written file (a finished `-partial` download, a quantized model) and
        renames it to its blob name. On a mismatch the file is deleted and DigestMismatch raised with
        the pull error text."""
        expected = parse_digest(expected)
        tmp = Path(tmp_path)
        fd = os.open(tmp, os.O_RDONLY | os.O_CLOEXEC)
        try:
            actual = hash_fd(fd)
            if actual != expected:
                tmp.unlink(missing_ok=True)
                raise DigestMismatch(
                    expected, actual,
                    f"digest mismatch, file must be downloaded again: want {expected}, got {actual}")
            os.fsync(fd)
            os.fchmod(fd, FILE_MODE)
            os.replace(tmp, self.paths.blob(expected))
            fsync_dir(self.paths.blobs_dir)
            self.verifier.record(expected, fd)
        finally:
            os.close(fd)

    def import_file(self, path: str | os.PathLike) -> tuple[str, bool]:
        """Hashes a file made inside blobs/ (e.g. by a quantizer) and moves it to its blob name;
        returns (digest, created). The file is consumed either way; one made elsewhere is copied in."""
        tmp = Path(path)
        if tmp.parent.resolve() != self.paths.blobs_dir.resolve():
            try:
                with open(tmp, "rb") as f:
                    return self.write(iter(lambda: f.read(BUFFER_SIZE), b""))
            finally:
                tmp.unlink(missing_ok=True)
        try:
            fd = os.open(tmp, os.O_RDONLY | os.O_CLOEXEC)
            try:
                digest = hash_fd(fd)
                os.fsync(fd)
                os.fchmod(fd, FILE_MODE)
                return digest, self._install(tmp, digest, fd)
            finally:
                os.close(fd)
        except OSError as err:
            if is_disk_full(err):
                raise no_space(tmp) from err
            raise
        finally:
            tmp.unlink(missing_ok=True)
