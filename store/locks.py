"""Advisory locks (flock) on the store's own files, so that several servers can share one store.

Why on the files themselves and not a lock file: Ollama's layout has no place for one (an extra file in
the store breaks the layout Ollama reads and prunes), and a lock held on the file it protects goes away
with its holder, SIGKILL included. A temp file that can be locked is therefore surely dead: nobody is
writing it, whatever its age. The uses:

* a writer holds LOCK_EX on its temp file (upload, create, quantize or conversion output, manifest) from
  its creation until it is renamed into place or removed; the start-up sweep removes only temp files it
  can lock (store/prune.py);
* a download holds LOCK_EX on its `-partial` data file, so a second server pulling the same blob waits
  for it instead of writing the same file (service/registry/partial.py);
* a pin (a create or pull about to reference a blob) holds LOCK_SH on the blob; a prune deletes a blob
  only while it holds LOCK_EX on it, taken without waiting, so a pin in another process makes it skip
  the blob (store/prune.py).

flock belongs to an open file description: two opens in one process conflict as two processes do, and
the lock goes with the last descriptor. A lock taken on a path is only good if the path still names the
locked file afterwards (a holder may have renamed or unlinked it meanwhile): `same_file` checks that.
"""

from __future__ import annotations

import errno
import fcntl
import os
from collections.abc import Callable
from pathlib import Path

# flock errors that mean "this filesystem cannot lock", not "someone holds it": locking is then skipped
_UNSUPPORTED = (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS)


class Busy(Exception):
    """Another open file description holds a conflicting lock."""


def same_file(fd: int, path: str | os.PathLike) -> bool:
    """True when `path` still names the file open at `fd`."""
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return False
    own = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)


def flock(fd: int, exclusive: bool = True, wait: bool = False) -> None:
    """Locks an open file; Busy when `wait` is False and someone else holds it. A filesystem without
    flock counts as locked (the store then works as a single server's store always did)."""
    op = (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | (0 if wait else fcntl.LOCK_NB)
    try:
        fcntl.flock(fd, op)
    except BlockingIOError:
        raise Busy() from None
    except OSError as exc:
        if exc.errno not in _UNSUPPORTED:
            raise


def create_locked(make_path: Callable[[], Path], mode: int) -> tuple[int, Path]:
    """Creates a fresh file (O_EXCL) at a name from `make_path` and holds LOCK_EX on it; returns (fd, path).

    Between the create and the lock a sweep may lock and remove the new file: then another name is tried,
    so the returned fd always holds the lock on the file its path names."""
    while True:
        path = make_path()
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
        except FileExistsError:
            continue
        try:
            flock(fd, wait=True)
            if same_file(fd, path):
                return fd, path
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)


def lock_path(path: str | os.PathLike, exclusive: bool = True, wait: bool = False) -> int | None:
    """Opens an existing file and locks it; returns the fd (the caller closes it to unlock), None if the
    file does not exist (or vanished while we waited for it), Busy if held elsewhere and not `wait`."""
    while True:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except (FileNotFoundError, NotADirectoryError):
            return None
        try:
            flock(fd, exclusive, wait)
        except BaseException:
            os.close(fd)
            raise
        if same_file(fd, path):
            return fd
        os.close(fd)  # replaced or removed while we waited: lock what the path names now


def unlink_if_unlocked(path: str | os.PathLike) -> bool:
    """Removes a file nobody holds a lock on; False if it is held (or already gone)."""
    try:
        fd = lock_path(path)
    except Busy:
        return False
    if fd is None:
        return False
    try:
        os.unlink(path)
        return True
    except FileNotFoundError:
        return False
    finally:
        os.close(fd)
