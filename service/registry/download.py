"""Downloads one blob with parallel range requests, verified before it becomes visible, shared by pulls.

Why it is built this way:
* Parallel ranges: one TCP stream rarely fills a fast link to a CDN; Ollama fetches up to 16 parts at
  once and so do we (CORRAL_REGISTRY_STREAMS). Unlike Ollama we do not insist on a cross-host redirect:
  `requests` follows whatever redirects the registry sends (dropping Authorization on a host change), and
  a registry that answers 200 or 206 itself (Debian's docker-registry, registry:2) works too.
* Verified: a hasher thread follows the contiguous written prefix and hashes it from the page cache while
  the parts are still arriving, so verification costs almost no time after the last byte. The data lives
  in `-partial` until the hash matches; only then is it renamed to its blob name.
* Resumable: partial.PartialFile records only fsynced bytes (a checkpoint every second), so a pull that
  stops for any reason (client gone, network cut, SIGKILL) goes on from there next time.
* Shared: Downloads keeps one BlobDownload per digest; every pull that needs the blob waits on the same
  one and sees the same progress. It is cancelled only when its last waiter leaves. Across servers on one
  store, the lock on the `-partial` file (partial.py) makes a second server wait for the first.
"""

from __future__ import annotations

import hashlib
import logging
import mmap
import os
import socket
import threading

from corral.service import metrics
from corral.service.registry.client import RegistryClient, error_text
from corral.service.registry.partial import PartialFile
from corral.store.errors import Cancelled, CorralError, Internal, Unavailable

log = logging.getLogger("corral.registry")

READ_SIZE = 256 << 10
HASH_WINDOW = 8 << 20
CHECKPOINT_SECONDS = 1.0


class DigestError(Internal):
    """The downloaded bytes do not hash to the digest the manifest promised."""


class _Fatal(Exception):
    """A reply that retrying cannot fix (404, 403, ...)."""


class BlobDownload:
    """One blob being fetched into the store by a set of part threads, a hasher and a checkpointer."""

    def __init__(self, client: RegistryClient, paths, url: str, digest: str, total: int, on_exit=None):
        self.client, self.url, self.digest, self.total = client, url, digest, total
        self.partial = PartialFile(paths, digest, total, client.tuning.part_size_for(total))
        self.blob_path = paths.blob(digest)
        self.waiters = 0
        self.error: BaseException | None = None
        self.finished = threading.Event()
        self.stop = threading.Event()
        self._written = threading.Condition()
        self._replies: set = set()
        self._on_exit = on_exit
        self.thread = threading.Thread(target=self._run, name=f"pull-{digest[7:19]}", daemon=True)

    @property
    def completed(self) -> int:
        return sum(p.completed for p in self.partial.parts)

    def cancel(self) -> None:
        """Stops the transfer now; the recorded bytes stay on disk for the next pull."""
        self.stop.set()
        with self._written:
            self._written.notify_all()
            replies = list(self._replies)
        for reply in replies:  # wake threads blocked in recv()
            try:
                reply.raw.connection.sock.shutdown(socket.SHUT_RDWR)
            except (AttributeError, OSError):
                pass

    # -- the coordinator ---------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            if self.partial.open(self.stop) is None:
                return  # another server on the store finished this blob while we waited for it
            self._download()
        except BaseException as exc:
            self.error = exc
        finally:
            self.partial.close()
            self.finished.set()
            if self._on_exit:
                self._on_exit(self)

    def _download(self) -> None:
        errors: list[BaseException] = []
        hashed: list[str] = []

        def guard(target, *args):
            try:
                target(*args)
            except BaseException as exc:
                errors.append(exc)
                self.stop.set()
                self.cancel()

        pending = [p for p in self.partial.parts if not p.done]
        lock = threading.Lock()
        idle = threading.Event()
        running = [min(self.client.tuning.streams, len(pending))]

        def worker():
            try:
                while not self.stop.is_set():
                    with lock:
                        if not pending:
                            return
                        part = pending.pop(0)
                    self._fetch_part(part)
            finally:
                with lock:
                    running[0] -= 1
                    if running[0] <= 0:
                        idle.set()

        threads = [threading.Thread(target=guard, args=(worker,), daemon=True) for _ in range(running[0])]
        if not threads:
            idle.set()
        hasher = threading.Thread(target=guard, args=(self._hash, hashed), daemon=True)
        for t in [*threads, hasher]:
            t.start()
        try:
            while not idle.wait(CHECKPOINT_SECONDS):  # record progress every second while parts arrive
                self.partial.checkpoint()
        finally:
            if not idle.is_set():  # the checkpoint failed: stop the threads before the file is closed
                self.cancel()
            for t in threads:
                t.join()
        if errors or not all(p.done for p in self.partial.parts):
            self.partial.checkpoint()  # keep what arrived for the next attempt
            self.stop.set()
            hasher.join()
            raise errors[0] if errors else Cancelled("download cancelled")
        # Complete: no records to write; the commit's fsync and rename make the blob durable at once.
        hasher.join()
        if errors:
            raise errors[0]
        actual = hashed[0]
        if actual != self.digest:
            self.partial.discard()
            raise DigestError(
                f"digest mismatch, file must be downloaded again: want {self.digest}, got {actual}")
        self.partial.commit(self.blob_path)

    # -- part threads -------------------------------------------------------------------------------

    def _fetch_part(self, part) -> None:
        tries, retries = 0, self.client.tuning.retries
        while not part.done and not self.stop.is_set():
            before = part.completed
            try:
                self._fetch_range(part)
            except _Fatal as exc:
                raise Internal(str(exc)) from None
            except CorralError as exc:
                if not isinstance(exc, Unavailable):
                    raise
                cause = exc.message
            except Exception as exc:
                cause = f"{exc.__class__.__name__}: {exc}"
            else:
                continue
            if self.stop.is_set():
                return
            tries = 0 if part.completed > before else tries + 1  # progress resets the count
            if tries >= retries:
                raise Unavailable(f"max retries exceeded: {cause}")
            log.info("part %d of %s: %s; retrying", part.n, self.digest, cause)
            self.stop.wait(self.client.tuning.backoff * 2 ** (tries - 1))

    def _fetch_range(self, part) -> None:
        start, end = part.offset + part.completed, part.offset + part.size - 1
        reply = self.client.request("GET", self.url, headers={"Range": f"bytes={start}-{end}"}, stream=True)
        with reply:
            if reply.status_code == 206:
                skip = 0
            elif reply.status_code == 200:
                skip = start  # the server ignored Range: read past what we have
            elif reply.status_code in (404, 403, 401, 400):
                raise _Fatal(f"pull blob {self.digest}: {error_text(reply)}")
            else:
                raise Unavailable(error_text(reply))
            with self._written:
                self._replies.add(reply)
            try:
                self._copy(reply, part, skip)
            finally:
                with self._written:
                    self._replies.discard(reply)

    def _copy(self, reply, part, skip: int) -> None:
        read = reply.raw.read1
        while not part.done:
            if self.stop.is_set():
                return
            want = part.size - part.completed
            chunk = read(min(READ_SIZE, want + skip) if skip else min(READ_SIZE, want))
            if not chunk:
                if self.stop.is_set():
                    return
                raise ConnectionError(f"connection closed after {part.completed} of {part.size} bytes")
            if skip:
                drop = min(skip, len(chunk))
                chunk, skip = chunk[drop:], skip - drop
                if not chunk:
                    continue
            self.partial.write(chunk, part.offset + part.completed)
            part.completed += len(chunk)
            metrics.PULLED_BYTES.inc(len(chunk))
            with self._written:
                self._written.notify_all()

    # -- the hasher ---------------------------------------------------------------------------------

    def _hash(self, out: list) -> None:
        """Hashes the contiguous written prefix as it grows, reading back from the page cache."""
        hasher, pos = hashlib.sha256(), 0
        fd = os.open(self.partial.path, os.O_RDONLY)
        try:
            while pos < self.total:
                with self._written:
                    while self.partial.frontier() <= pos and not self.stop.is_set():
                        self._written.wait(0.5)
                limit = self.partial.frontier()
                if limit <= pos:
                    return  # stopped before everything arrived
                while pos < limit:
                    pos = _hash_window(fd, hasher, pos, limit)
        finally:
            os.close(fd)
        out.append("sha256:" + hasher.hexdigest())


def _hash_window(fd: int, hasher, pos: int, limit: int) -> int:
    """Feeds bytes [pos, min(limit, pos + window)) of a file to a hash; returns the new position.

    A short-lived mmap of the window hashes straight from the page cache (no copy, ~15 % less CPU than
    pread on this path); the window bounds the resident pages it adds to the server's RSS."""
    start = pos - pos % mmap.ALLOCATIONGRANULARITY
    end = min(limit, start + HASH_WINDOW)
    try:
        with mmap.mmap(fd, end - start, prot=mmap.PROT_READ, offset=start) as mapped, memoryview(mapped) as view:
            hasher.update(view[pos - start:])
        return end
    except (OSError, ValueError):  # a file system without mmap
        data = os.pread(fd, end - pos, pos)
        if not data:
            raise OSError(f"short read at {pos}") from None
        hasher.update(data)
        return pos + len(data)


class Downloads:
    """The downloads in flight, one per digest, shared by every pull that waits for that blob."""

    def __init__(self, client: RegistryClient, paths):
        self.client, self.paths = client, paths
        self._active: dict[str, BlobDownload] = {}
        self._lock = threading.Lock()

    def acquire(self, url: str, digest: str, total: int) -> BlobDownload:
        """The running download of `digest`, or a new one; the caller must release() it."""
        while True:
            with self._lock:
                download = self._active.get(digest)
                if download is None:
                    download = BlobDownload(self.client, self.paths, url, digest, total, self._exited)
                    self._active[digest] = download
                    download.waiters = 1
                    download.thread.start()
                    return download
                if not download.stop.is_set():
                    download.waiters += 1
                    return download
            download.finished.wait()  # a cancelled one is still writing its last record: let it finish

    def release(self, download: BlobDownload) -> None:
        with self._lock:
            download.waiters -= 1
            last = download.waiters <= 0
        if last and not download.finished.is_set():
            download.cancel()

    def _exited(self, download: BlobDownload) -> None:
        with self._lock:
            if self._active.get(download.digest) is download:
                del self._active[download.digest]

    def close(self) -> None:
        with self._lock:
            active = list(self._active.values())
        for download in active:
            download.cancel()
        for download in active:
            download.finished.wait(10)
