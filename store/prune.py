"""Blob lifetime: which blobs are live, pins for blobs about to become live, and pruning (spec §7).

Why its own module: deleting a blob that a manifest still references breaks a model for good, so every
deletion goes through the one rule here: a blob is live while any manifest lists it (as a layer or the
config) or while a create or pull in progress pins it. A manifest that does not parse still protects
every digest-looking string in it. Pruning and pinning take one lock, so once a blob is pinned and seen
on disk, no prune can remove it until it is unpinned.

Who references a blob comes from the manifest index (store/index.py), not from reading every manifest:
a candidate blob with one user whose manifest is unchanged on disk is kept after one stat; only when no
user can be confirmed is the index refreshed against the whole tree (a stat per directory and manifest,
re-reading what changed, also what another process changed) before the blob is deleted. So deleting one
of 1,000 models that share their blobs costs a few stats, and the last user's delete one verified walk.

Unlike Ollama, the startup prune keeps `-partial` download state, so an interrupted pull resumes after a
restart, and (as Ollama v0.21+) it spares files modified in the last hour.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Iterable
from contextlib import contextmanager

from corral.store.blobs import BlobStore, fsync_dir
from corral.store.config import noprune
from corral.store.digests import digest_from_filename, is_digest, parse_digest
from corral.store.index import ManifestIndex
from corral.store.manifests import ManifestStore

log = logging.getLogger(__name__)

PRUNE_GRACE_SECONDS = 3600.0


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
        self._deferred: set[str] = set()  # unreferenced candidates a prune skipped while they were pinned
        self._lock = threading.RLock()

    @contextmanager
    def pinned(self, digests: Iterable[str]):
        """Keeps blobs from being pruned while a manifest that will reference them is being made.
        Pinning waits for a prune in progress, so once pinned, a blob seen on disk stays there. A prune
        that skipped a pinned blob is redone for it when its last pin is released."""
        digests = [parse_digest(d) for d in digests]
        with self._lock:
            self._pins.update(digests)
        try:
            yield
        finally:
            with self._lock:
                self._pins.subtract(digests)
                self._pins += Counter()  # drops zero counts
                released = {d for d in digests if d in self._deferred and d not in self._pins}
                self._deferred -= released
                self.prune(released)  # what a prune skipped because of this pin

    def referenced_digests(self) -> tuple[set[str], bool]:
        """Every digest some manifest references now, and whether every manifest parsed (and could be read)."""
        self.index.refresh()
        return self.index.referenced(), self.index.all_parsed()

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
            self.index.refresh()  # verified against the disk before anything is deleted
            if not self.index.complete:
                log.warning("not pruning blobs: a manifest cannot be read")
                return []
            referenced = self.index.referenced()
            unreferenced = maybe - referenced
            self._deferred |= unreferenced & set(self._pins)  # retried when the last pin goes
            for digest in sorted(unreferenced - set(self._pins)):
                if self.blobs.delete(digest):
                    removed.append(digest)
        return removed

    def startup_prune(self, grace_seconds: float = PRUNE_GRACE_SECONDS) -> list[str]:
        """Renames legacy `sha256:<hex>` blob files; then, unless OLLAMA_NOPRUNE or a manifest fails to
        parse, deletes unreferenced blobs and stray files older than the grace period (keeping resumable
        `-partial` state) and removes empty manifest directories. Returns the removed file names."""
        self._rename_legacy_blobs()
        if noprune():
            log.info("OLLAMA_NOPRUNE is set: not pruning blobs")
            return []
        removed: list[str] = []
        with self._lock:
            referenced, ok = self.referenced_digests()
            if not ok:
                log.warning("not pruning blobs: a manifest does not parse")
                return []
            cutoff = time.time() - grace_seconds
            finished = self.blobs.all_digests()  # a -partial whose blob was finished is a leftover
            for entry in sorted(os.scandir(self.blobs.paths.blobs_dir), key=lambda e: e.name):
                if not entry.is_file(follow_symlinks=False) or entry.stat().st_mtime >= cutoff:
                    continue
                digest = digest_from_filename(entry.name)
                if digest is None:
                    download = partial_digest(entry.name)
                    if download is not None and download not in finished:
                        continue  # resumable download state
                elif digest in referenced or digest in self._pins:
                    continue
                os.unlink(entry.path)
                removed.append(entry.name)
            if removed:
                fsync_dir(self.blobs.paths.blobs_dir)
            self.manifests.prune_empty_dirs()
        log.info("startup prune removed %d blob files", len(removed))
        return removed

    def _rename_legacy_blobs(self) -> None:
        try:
            entries = list(os.scandir(self.blobs.paths.blobs_dir))
        except FileNotFoundError:
            return
        for entry in entries:
            if entry.name.startswith("sha256:") and is_digest(entry.name):
                os.replace(entry.path, self.blobs.path(entry.name))
