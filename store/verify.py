"""Is a blob still the content its name promises? Hashed once, then trusted while its stamp holds.

Why: a flipped bit in a model blob (a failing disk, a stray write, a bad copy) would otherwise be loaded
and served as the model, and nobody could explain its output; a pull would trust a damaged local copy
for good. Hashing a multi-GiB blob at every load costs seconds, so a blob is hashed once: when it is
written (upload, pull, create, quantize hash the bytes as they write them) or, for a blob someone else
wrote (Ollama, a copy), at its first load or pull. The result is kept as a stamp, (inode, size, mtime),
and later checks cost one stat: a blob is trusted while its stamp matches, hashed again once when it
does not, and reported corrupt, naming its digest, when the hash differs. The other designs: hashing
at every load (seconds per load of a large model), or hashing in the background after the runner
started (a damaged model serves requests meanwhile).

Why the stamp holds: a write sets the file's mtime to the current time, and a replacement has another
inode. Timestamps are coarse (a clock tick), so a write in the same tick as the verification could
leave mtime unchanged; verifying therefore first sets the blob's mtime back by 2 s (more than any
filesystem's timestamp granularity), a value no later write can produce. The stamp lives in an extended
attribute of the blob (`user.corral.verified`: digest, inode, size, mtime), shared by every server on
the store, outside Ollama's layout and moved with the file; where the filesystem has no user xattrs, in
this process's memory only (so each process hashes once). Both caches also key on ctime in memory.

Not covered, by design: damage that changes neither mtime nor inode (a disk returning other bytes for an
untouched file); store/fsck.py hashes everything when asked.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import threading
from pathlib import Path

from corral.store.errors import Internal, NotFound

log = logging.getLogger(__name__)

XATTR = "user.corral.verified"
SHIFT_NS = 2_000_000_000
_NO_XATTR = (errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS, errno.EPERM, errno.EACCES, errno.EROFS,
             errno.ENOSPC, errno.EDQUOT, errno.E2BIG, errno.ERANGE)


class Corrupt(Internal):
    """A blob whose content no longer hashes to its name."""

    def __init__(self, digest: str, actual: str):
        super().__init__(f"blob {digest} is corrupt: its content hashes to {actual}; "
                         "pull or create the model again")
        self.digest, self.actual = digest, actual


def hash_fd(fd: int) -> str:
    """`sha256:<hex>` of an open file's whole content (read with pread: the file position is left alone)."""
    hasher = hashlib.sha256()
    buf = bytearray(1 << 20)
    view = memoryview(buf)
    offset = 0
    while n := os.preadv(fd, [buf], offset):
        hasher.update(view[:n])
        offset += n
    return "sha256:" + hasher.hexdigest()


def _full_key(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _persisted(digest: str, st: os.stat_result) -> bytes:
    return f"{digest} {st.st_ino} {st.st_size} {st.st_mtime_ns}".encode()


def _shift(fd: int) -> os.stat_result:
    """Moves mtime back SHIFT_NS (see the module docstring); the file's stat after that."""
    st = os.fstat(fd)
    try:
        os.utime(fd, ns=(st.st_atime_ns, st.st_mtime_ns - SHIFT_NS))
    except OSError:  # not ours to change (a read-only store): the stamp is only racier
        return st
    return os.fstat(fd)


def _persist(digest: str, fd: int, st: os.stat_result) -> os.stat_result:
    """Writes the stamp into the blob's extended attribute where the filesystem has them."""
    try:
        os.setxattr(fd, XATTR, _persisted(digest, st))
    except OSError as exc:
        if exc.errno not in _NO_XATTR:
            raise
        return st
    return os.fstat(fd)  # setting the attribute changed ctime


def stamp(digest: str, fd: int) -> os.stat_result:
    """Stamps an open blob whose bytes its writer just hashed to `digest`, for every process on the store
    (a download, which has no BlobVerifier of its own, calls this); returns its stat after the stamp."""
    return _persist(digest, fd, _shift(fd))


class BlobVerifier:
    """Verification stamps of one store's blobs; thread-safe."""

    def __init__(self) -> None:
        self._good: dict[str, tuple[int, int, int, int]] = {}  # digest -> full key when last verified
        self._bad: dict[str, tuple[tuple[int, int, int, int], str]] = {}  # digest -> (key, actual digest)
        self._lock = threading.Lock()
        self._hashing: dict[str, threading.Lock] = {}

    def forget(self, digest: str) -> None:
        with self._lock:
            self._good.pop(digest, None)
            self._bad.pop(digest, None)

    # -- recording --------------------------------------------------------------------------------

    def record(self, digest: str, fd: int) -> None:
        """Stamps an open blob whose bytes were just hashed to `digest` by its writer."""
        self._remember(digest, stamp(digest, fd))

    def _remember(self, digest: str, st: os.stat_result) -> None:
        with self._lock:
            self._good[digest] = _full_key(st)
            self._bad.pop(digest, None)

    # -- checking ---------------------------------------------------------------------------------

    def check(self, digest: str, path: Path) -> str:
        """The digest the blob's content hashes to (== `digest` when it is intact), hashing only when its
        stamp does not vouch for it; NotFound if there is no such blob."""
        try:
            st = os.stat(path)
        except FileNotFoundError:
            raise NotFound(f'blob "{digest}" not found') from None
        key = _full_key(st)
        with self._lock:
            if self._good.get(digest) == key:
                return digest
            bad = self._bad.get(digest)
            if bad is not None and bad[0] == key:
                return bad[1]
            gate = self._hashing.setdefault(digest, threading.Lock())
        with gate:  # one thread hashes a blob; the others wait for its stamp
            return self._verify(digest, path)

    def _verify(self, digest: str, path: Path) -> str:
        for _ in range(3):
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                raise NotFound(f'blob "{digest}" not found') from None
            try:
                st = os.fstat(fd)
                with self._lock:
                    if self._good.get(digest) == _full_key(st):
                        return digest  # verified by the thread we waited for
                if self._stamped(digest, fd, st):
                    with self._lock:
                        self._good[digest] = _full_key(st)
                    return digest
                st = _shift(fd)
                log.info("verifying blob %s (%d bytes)", digest, st.st_size)
                actual = hash_fd(fd)
                if _full_key(os.fstat(fd)) != _full_key(st):
                    continue  # written while we read it: hash again
                if actual == digest:
                    self._remember(digest, _persist(digest, fd, st))
                else:
                    log.error("blob %s is corrupt: content hashes to %s", digest, actual)
                    with self._lock:
                        self._bad[digest] = (_full_key(os.fstat(fd)), actual)
                        self._good.pop(digest, None)
                return actual
            finally:
                os.close(fd)
        raise Internal(f"blob {digest} keeps changing while it is verified")

    @staticmethod
    def _stamped(digest: str, fd: int, st: os.stat_result) -> bool:
        try:
            return os.getxattr(fd, XATTR) == _persisted(digest, st)
        except OSError:
            return False

    def verify(self, digest: str, path: Path) -> None:
        """Raises Corrupt (naming the digest) unless the blob hashes to its name; NotFound if missing."""
        actual = self.check(digest, path)
        if actual != digest:
            raise Corrupt(digest, actual)
