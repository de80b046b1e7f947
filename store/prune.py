"""Blob lifetime: which blobs are live, pins for blobs about to become live, and pruning (spec §7).

Why its own module: deleting a blob that a manifest still references breaks a model for good, so every
deletion goes through the one rule here: a blob is live while any manifest lists it (as a layer or the
config) or while a create or pull in progress pins it. A manifest that does not parse still protects
every digest-looking string in it. Pruning and pinning take one lock, so once a blob is pinned and seen
on disk, no prune can remove it until it is unpinned.

Several servers may share one store, so a pin is also an flock (LOCK_SH) on the blob file, and a prune
deletes a blob only while holding LOCK_EX on it, taken without waiting (store/locks.py): a blob pinned by
another process is skipped (it stays until a later prune or start-up finds it unreferenced), and the
manifest index is refreshed after the locks are taken, so a manifest written before a pin was released
is always seen. A pin taken before its blob exists (a pull) is taken on the file once it appears.

Who references a blob comes from the manifest index (store/index.py), not from reading every manifest:
a candidate blob with one user whose manifest is unchanged on disk is kept after one stat; only when no
user can be confirmed is the index refreshed against the whole tree (a stat per directory and manifest,
re-reading what changed, also what another process changed) before the blob is deleted. So deleting one
of 1,000 models that share their blobs costs a few stats, and the last user's delete one verified walk.

The start-up sweep: temp files Corral writes (uploads, creates, quantizer output, manifests being
written) are removed as soon as they can be locked, since their writer holds an flock until it is done:
a file left by a killed process goes at the next start, one another live server is writing stays.
Unlike Ollama it keeps `-partial` download state, so an interrupted pull resumes after a restart.
Unreferenced blobs and files it does not know (an Ollama temp file) are spared for an hour after their
last change, as Ollama v0.21+ does: an upload may be waiting for the create that will reference it.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections import Counter
from collections.abc import Iterable
from contextlib import contextmanager

from corral.store.blobs import BlobStore, fsync_dir
from corral.store.config import noprune
from corral.store.digests import digest_from_filename, is_digest, parse_digest
from corral.store.index import ManifestIndex
from corral.store.locks import Busy, lock_path, same_file, unlink_if_unlocked
from corral.store.manifests import ManifestStore
from corral.store.paths import is_temp_blob, is_temp_manifest

log = logging.getLogger(__name__)

PRUNE_GRACE_SECONDS = 3600.0

# sha256-<hex>-partial, -partial-<N> (a part record) and -partial-<N>.tmp (a record being replaced)
_DOWNLOAD_FILE = re.compile(r"(sha256-[0-9a-fA-F]{64})-partial(?:-(\d+)(\.tmp)?)?")


def partial_digest(filename: str) -> str | None:
    """The digest a `sha256-<hex>-partial[-N]` download file belongs to, else None."""
    head, sep, tail = filename.partition("-partial")
    if not sep or (tail and not (tail.startswith("-") and tail[1:].isdigit())):
        return None
    return digest_from_filename(head)


class Pruner:
    """Pins and prunes the blobs of one store."""

    def __init__(self, blobs: BlobStore, manifests: ManifestStore, index: ManifestIndex | None = None):
        self.blobs, self.manifests = blobs, manifests
        self.index = index or ManifestIndex(manifests)
        self._pins: Counter = Counter()
        self._held: dict[str, int] = {}  # pinned digest -> fd holding LOCK_SH on its blob file
        self._deferred: set[str] = set()  # unreferenced candidates a prune skipped while they were pinned
        self._lock = threading.RLock()

    @contextmanager
    def pinned(self, digests: Iterable[str]):
        """Keeps blobs from being pruned while a manifest that will reference them is being made, by this
        process or any other on the store. Pinning waits for a prune in progress, so once pinned, a blob
        seen on disk stays there; pinning a digest again takes the file lock if its blob has appeared (or
        was replaced) since. A prune that skipped a pinned blob is redone for it when its last pin goes."""
        digests = [parse_digest(d) for d in digests]
        with self._lock:
            self._pins.update(digests)
            try:
                for digest in digests:
                    self._hold(digest)
            except BaseException:
                self._unpin(digests)
                raise
        try:
            yield
        finally:
            with self._lock:
                self._unpin(digests)

    def _hold(self, digest: str) -> None:
        """Takes (or renews) the shared lock on a pinned blob's file, if the file exists."""
        path = self.blobs.path(digest)
        fd = self._held.get(digest)
        if fd is not None:
            if same_file(fd, path):
                return
            os.close(self._held.pop(digest))
        fd = lock_path(path, exclusive=False, wait=True)
        if fd is not None:
            self._held[digest] = fd

    def _unpin(self, digests: list[str]) -> None:
        self._pins.subtract(digests)
        self._pins += Counter()  # drops zero counts
        for digest in set(digests) - set(self._pins):
            fd = self._held.pop(digest, None)
            if fd is not None:
                os.close(fd)
        released = {d for d in digests if d in self._deferred and d not in self._pins}
        self._deferred -= released
        self.prune(released)  # what a prune skipped because of this pin

    def referenced_digests(self) -> tuple[set[str], bool]:
        """Every digest some manifest references now, and whether every manifest parsed (and could be read)."""
        self.index.refresh()
        return self.index.referenced(), self.index.all_parsed()

    def _lock_unpinned(self, digests: Iterable[str]) -> dict[str, int]:
        """LOCK_EX, without waiting, on the blobs of `digests` nobody pins (here or in another process)."""
        held = {}
        for digest in sorted(set(digests) - set(self._pins)):
            try:
                fd = lock_path(self.blobs.path(digest), exclusive=True, wait=False)
            except Busy:
                log.info("not pruning %s: another process pins it", digest)
                continue
            if fd is not None:
                held[digest] = fd
        return held

    def prune(self, candidates: Iterable[str]) -> list[str]:
        """Deletes those candidate blobs that no manifest references and nothing pins; returns them."""
        wanted = {parse_digest(d) for d in candidates if is_digest(d)}
        if not wanted:
            return []
        removed = []
        with self._lock:
            maybe = {d for d in wanted if not self.index.confirmed_user(d)}
            if not maybe:
                return []
            held = self._lock_unpinned(maybe)
            try:
                self.index.refresh()  # verified against the disk, after the locks, before anything is deleted
                if not self.index.complete:
                    log.warning("not pruning blobs: a manifest cannot be read")
                    return []
                unreferenced = maybe - self.index.referenced()
                self._deferred |= unreferenced & set(self._pins)  # retried when the last pin goes
                for digest in sorted(unreferenced & set(held)):
                    if self.blobs.delete(digest):
                        removed.append(digest)
            finally:
                for fd in held.values():
                    os.close(fd)
        return removed

    def startup_prune(self, grace_seconds: float = PRUNE_GRACE_SECONDS) -> list[str]:
        """Renames legacy `sha256:<hex>` blob files, removes dead temp files (see the module docstring);
        then, unless OLLAMA_NOPRUNE or a manifest fails to parse, deletes unreferenced blobs and unknown
        files older than the grace period (keeping resumable `-partial` state) and removes empty manifest
        directories. Returns the removed file names (manifest temp files as paths below manifests/)."""
        self._rename_legacy_blobs()
        removed = self.sweep_temp_files()
        if noprune():
            log.info("OLLAMA_NOPRUNE is set: not pruning blobs")
            return removed
        with self._lock:
            referenced, ok = self.referenced_digests()
            if not ok:
                log.warning("not pruning blobs: a manifest does not parse")
                return removed
            cutoff = time.time() - grace_seconds
            finished = self.blobs.all_digests()  # a -partial whose blob was finished is a leftover
            downloads: dict[str, list[str]] = {}
            candidates = []
            for entry in sorted(_scan(self.blobs.paths.blobs_dir), key=lambda e: e.name):
                if not entry.is_file(follow_symlinks=False):
                    continue
                digest = digest_from_filename(entry.name)
                if digest is not None:
                    if digest not in referenced and digest not in self._pins and _older(entry, cutoff):
                        candidates.append(digest)
                    continue
                match = _DOWNLOAD_FILE.fullmatch(entry.name)
                if match is not None:
                    downloads.setdefault(parse_digest(match.group(1)), []).append(entry.name)
                elif not is_temp_blob(entry.name) and _older(entry, cutoff):
                    removed += self._unlink(entry.path, entry.name)  # a file of someone else's, long dead
            for digest, names in sorted(downloads.items()):
                removed += self._sweep_download(digest, names, digest in finished)
            held = self._lock_unpinned(candidates)
            try:
                self.index.refresh()  # after the locks: what another server referenced meanwhile is kept
                if self.index.all_parsed():
                    referenced = self.index.referenced()
                    for digest in sorted(set(held) - referenced):
                        if self.blobs.delete(digest):
                            removed.append(self.blobs.path(digest).name)
            finally:
                for fd in held.values():
                    os.close(fd)
            if removed:
                fsync_dir(self.blobs.paths.blobs_dir)
            self.manifests.prune_empty_dirs()
        log.info("startup prune removed %d blob files", len(removed))
        return removed

    def sweep_temp_files(self) -> list[str]:
        """Removes the temp files of uploads, creates and manifest writes whose writer is gone (they can be
        locked), whatever their age; those being written stay. Runs also under OLLAMA_NOPRUNE: these are
        never data anyone can use."""
        removed = []
        for entry in _scan(self.blobs.paths.blobs_dir):
            if is_temp_blob(entry.name) and unlink_if_unlocked(entry.path):
                removed.append(entry.name)
        root = self.manifests.paths.manifests_dir
        for dirpath, _dirs, files in os.walk(root):
            for name in files:
                path = os.path.join(dirpath, name)
                if is_temp_manifest(name) and unlink_if_unlocked(path):
                    removed.append(os.path.relpath(path, root))
        if removed:
            log.info("removed %d temp files left by interrupted writes", len(removed))
        return removed

    def _sweep_download(self, digest: str, names: list[str], finished: bool) -> list[str]:
        """The files of one download: all of them once its blob is finished, else only stale record temp
        files; nothing while a download (here or in another server) holds its data file."""
        data = self.blobs.paths.partial(digest)
        try:
            fd = lock_path(data, exclusive=True, wait=False)
        except Busy:
            return []  # being downloaded right now
        try:
            doomed = [n for n in names if finished or n.endswith(".tmp") or fd is None]
            removed = []
            for name in sorted(doomed, key=lambda n: n != data.name):  # data first: records alone are swept later
                removed += self._unlink(os.path.join(self.blobs.paths.blobs_dir, name), name)
            return removed
        finally:
            if fd is not None:
                os.close(fd)

    @staticmethod
    def _unlink(path: str, name: str) -> list[str]:
        try:
            os.unlink(path)
        except FileNotFoundError:
            return []
        return [name]

    def _rename_legacy_blobs(self) -> None:
        try:
            entries = list(os.scandir(self.blobs.paths.blobs_dir))
        except FileNotFoundError:
            return
        for entry in entries:
            if entry.name.startswith("sha256:") and is_digest(entry.name):
                os.replace(entry.path, self.blobs.path(entry.name))


def _scan(directory) -> list[os.DirEntry]:
    try:
        with os.scandir(directory) as it:
            return list(it)
    except FileNotFoundError:
        return []


def _older(entry: os.DirEntry, cutoff: float) -> bool:
    """Last changed before `cutoff` (False for a file that went meanwhile)."""
    try:
        return entry.stat(follow_symlinks=False).st_mtime < cutoff
    except FileNotFoundError:
        return False
