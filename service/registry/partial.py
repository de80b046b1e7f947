"""On-disk state of one resumable blob download: `-partial` data plus `-partial-N` part records (spec §3).

Why this layout and this order of writes: a download must survive the client leaving, the network
failing and the server being killed with SIGKILL, and resume where it stopped, also after a restart.
Ollama's files are used as they are: `blobs/sha256-<hex>-partial` holds the data at its final offsets,
`blobs/sha256-<hex>-partial-<N>` holds `{"N","Offset","Size","Completed"}` for part N. The one rule that
makes any crash safe: a part's `Completed` only ever counts bytes that were fsynced before the record was
written, and records are replaced atomically (temp file, rename). A crash therefore leaves records
that under-count, never over-count, and the next pull re-fetches at most the unrecorded tail of each part.
Anything that does not add up (sizes, offsets, a missing record) is discarded and the download restarts.

Several servers may share the store: the download holds an flock on the data file from open() to
commit or close (store/locks.py). A second server pulling the same blob waits for it, and when the
first one has finished the blob meanwhile, uses it without fetching a byte. The start-up sweep keeps
the files of a download it cannot lock. A full disk, at the reservation or later, raises
ResourceExhausted with Go's "no space left on device" text; a fresh reservation that failed is removed.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from corral.store.blobs import fsync_dir
from corral.store.errors import Cancelled, is_disk_full, no_space
from corral.store.locks import Busy, flock, same_file
from corral.store.verify import stamp

log = logging.getLogger("corral.registry")


@dataclass
class Part:
    n: int
    offset: int
    size: int
    completed: int = 0  # bytes written to the data file (in memory, may be ahead of the disk)
    durable: int = 0  # bytes recorded in the part file (fsynced)

    @property
    def done(self) -> bool:
        return self.completed >= self.size


LOCK_POLL_SECONDS = 0.2


class PartialFile:
    """The data file and part records of one digest; call open() before anything else."""

    def __init__(self, paths, digest: str, total: int, part_size: int):
        self.paths = paths
        self.digest = digest
        self.total = total
        self.part_size = max(1, part_size)
        self.path: Path = paths.partial(digest)
        self.parts: list[Part] = []
        self.fd = -1

    def _record_path(self, n: int) -> Path:
        return self.paths.partial_part(self.digest, n)

    def _records(self) -> list[Path]:
        return sorted(self.path.parent.glob(self.path.name + "-*"))

    def open(self, stop: threading.Event | None = None) -> int | None:
        """Opens or creates the files and locks the data file; returns the bytes kept from an earlier
        attempt, or None when another server finished the blob while we waited for its download."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self._lock(stop or threading.Event()):
            return None
        self.parts = self._load() or []
        fresh = not self.parts
        try:
            if fresh:
                self.cleanup()
                offsets = range(0, self.total, self.part_size) if self.total else [0]
                self.parts = [Part(n, off, min(self.part_size, self.total - off)) for n, off in enumerate(offsets)]
            self._reserve()
            for part in self.parts:
                if part.durable == 0:
                    self._write_record(part, 0)
            fsync_dir(self.path.parent)
        except OSError as exc:
            if fresh:
                self.discard()  # nothing worth keeping: leave no empty reservation behind
            self.close()
            if is_disk_full(exc):
                raise no_space(self.path) from None
            raise
        return sum(p.completed for p in self.parts)

    def _lock(self, stop: threading.Event) -> bool:
        """Opens the data file holding its flock, waiting while another process downloads into it; False
        when that process finished the blob meanwhile (the blob is then there, verified)."""
        blob = self.paths.blob(self.digest)
        waited = False
        while True:
            if waited and blob.exists():
                return False
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                flock(fd)
            except Busy:
                os.close(fd)
                waited = True
                if stop.wait(LOCK_POLL_SECONDS):
                    raise Cancelled("download cancelled") from None
                continue
            if not same_file(fd, self.path):  # committed or removed before we had the lock
                os.close(fd)
                continue
            self.fd = fd
            if waited and blob.exists():  # finished by the other server just before we created the file
                self.discard()
                return False
            return True

    def _reserve(self) -> None:
        """Allocates the whole file now, so a full disk fails at once rather than at 99 %."""
        try:
            os.posix_fallocate(self.fd, 0, max(self.total, 1))
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                raise
            os.ftruncate(self.fd, self.total)
        if os.fstat(self.fd).st_size != self.total:
            os.ftruncate(self.fd, self.total)

    def _load(self) -> list[Part] | None:
        """The parts recorded by an earlier attempt, or None when anything is missing or inconsistent."""
        try:
            if self.path.stat().st_size != self.total:
                return None
        except FileNotFoundError:
            return None
        parts, offset = [], 0
        for path in self._records():
            if path.name.endswith(".tmp"):
                continue
            try:
                rec = json.loads(path.read_text())
                part = Part(int(rec["N"]), int(rec["Offset"]), int(rec["Size"]))
                part.completed = part.durable = int(rec["Completed"])
            except (OSError, ValueError, KeyError, TypeError):
                return None
            parts.append(part)
        parts.sort(key=lambda p: p.n)
        for i, part in enumerate(parts):
            if part.n != i or part.offset != offset or part.size <= 0 or not 0 <= part.completed <= part.size:
                return None
            offset += part.size
        if offset != self.total or not parts:
            return None
        return parts

    def _write_record(self, part: Part, completed: int) -> None:
        path = self._record_path(part.n)
        tmp = path.with_name(path.name + ".tmp")
        data = json.dumps({"N": part.n, "Offset": part.offset, "Size": part.size, "Completed": completed})
        # No fsync of the record itself: the data it counts was fsynced first, and a record lost or torn
        # by a power cut only fails validation in _load, which restarts the download: never unsafe.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, data.encode())
        finally:
            os.close(fd)
        os.replace(tmp, path)
        part.durable = completed

    def write(self, data, offset: int) -> None:
        """Writes bytes at an absolute offset; ENOSPC becomes ResourceExhausted."""
        view = memoryview(data)
        while view:
            try:
                n = os.pwrite(self.fd, view, offset)
            except OSError as exc:
                if is_disk_full(exc):
                    raise no_space(self.path) from None
                raise
            view, offset = view[n:], offset + n

    def checkpoint(self) -> None:
        """fsyncs the data, then records what was written before the fsync (never more)."""
        if self.fd < 0:
            return
        written = [p.completed for p in self.parts]
        if all(w == p.durable for w, p in zip(written, self.parts, strict=False)):
            return
        os.fdatasync(self.fd)
        try:
            for w, part in zip(written, self.parts, strict=False):
                if w != part.durable:
                    self._write_record(part, w)
        except OSError as exc:
            if is_disk_full(exc):
                raise no_space(self.path) from None
            raise

    def frontier(self) -> int:
        """How many bytes from offset 0 are written without a gap (the hasher may read up to here)."""
        for part in self.parts:
            if not part.done:
                return part.offset + part.completed
        return self.total

    def commit(self, blob: Path) -> None:
        """Makes the verified data the blob: fsync, rename, fsync the folder, drop the records, then let go
        of the lock. The blob is stamped as verified (store/verify.py): its bytes were just hashed.

        Renaming before dropping the records means a crash in between leaves a complete blob and stale
        records (removed by cleanup()), never records without data; releasing the lock last means a
        server waiting for this download finds the blob when it gets the lock."""
        os.fdatasync(self.fd)
        os.fchmod(self.fd, 0o644)
        os.replace(self.path, blob)
        fsync_dir(blob.parent)
        stamp(self.digest, self.fd)
        self.cleanup()
        self.close()

    def cleanup(self) -> None:
        """Removes the part records (and their temp files)."""
        for path in self._records():
            path.unlink(missing_ok=True)

    def discard(self) -> None:
        """Removes the data file and every record (the download starts from zero next time), under the
        lock if we hold it."""
        if self.fd >= 0 and same_file(self.fd, self.path):
            self.path.unlink(missing_ok=True)
        self.cleanup()
        self.close()

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
