"""A live index of manifests/: every manifest's bytes and parse, and for each blob the manifests using it.

Why: /api/tags walked the 4-level manifests tree and read each manifest per request (24 ms with 1,000
models), and every delete read *every* manifest to learn which blobs were still used (30 ms). The index
reads a manifest once per change, so listing costs one stat per directory and per manifest, and a delete
asks it who else uses a blob instead of rescanning the store.

Why it is never stale, also when another process (another Corral, Ollama itself) shares the store: it is
checked against the disk, not against this process's own bookkeeping. `refresh()` stats every directory
of the tree and every manifest: a directory whose (inode, mtime, ctime) changed is listed again (a model
or tag appeared or went), a manifest whose (inode, mtime, ctime, size) changed is read again (a rename
gives a new inode; an in-place write a new mtime and ctime). Timestamps are coarse (a clock tick, and 2 s
on some filesystems), so two changes within one tick can leave the same times: as git does for its
"racily clean" entries, what is read within SETTLE_NS of its own timestamps is not trusted and is read
again at every refresh until it has settled. ctime cannot be set by programs, so a `touch -d` to an old
time still counts as a change.

Blob users: `users(digest)` is the set of manifest paths referencing a digest as of the last refresh;
`confirmed_user(digest)` proves a blob is still referenced by finding one user whose file is unchanged on
disk (one stat, usually), which is all a delete of one of many models sharing blobs needs. Deciding
that a blob is *unreferenced* always takes a full refresh first (store/prune.py). A manifest that does not
parse protects every digest-looking string in it; one that cannot be read at all (permissions) makes
`complete` false, and pruning then deletes nothing.
"""

from __future__ import annotations

import itertools
import logging
import os
import stat
import threading
import time
from dataclasses import dataclass, field

from corral.store.digests import find_digests, is_digest, parse_digest
from corral.store.manifests import Manifest, ManifestStore
from corral.store.names import Name

log = logging.getLogger(__name__)

# How long after its last change (mtime/ctime) a file or directory read is trusted to show every change
# by its timestamps alone: above any clock tick and FAT's 2 s timestamp resolution.
SETTLE_NS = 3_000_000_000


def stat_key(st: os.stat_result) -> tuple[int, int, int, int]:
    """What changes whenever a file or directory changes: (inode, mtime, ctime, size)."""
    return (st.st_ino, st.st_mtime_ns, st.st_ctime_ns, st.st_size)


def settled(st: os.stat_result, read_started_ns: int) -> bool:
    """True when a later change is bound to show in the stat key (see the module docstring)."""
    return read_started_ns - max(st.st_mtime_ns, st.st_ctime_ns) > SETTLE_NS


@dataclass(eq=False)
class IndexedManifest:
    """One manifest file as last read. Immutable once made: a change makes a new one."""

    name: Name
    path: str
    key: tuple[int, int, int, int]
    raw: bytes
    manifest: Manifest | None  # None when it does not parse
    digests: frozenset[str]  # the blobs it protects from pruning
    settled: bool
    memo: dict = field(default_factory=dict)  # data derived from this version (a tags entry), thread-safe

    @property
    def mtime_ns(self) -> int:
        return self.key[1]


class _Dir:
    __slots__ = ("dirs", "files", "key", "settled")

    def __init__(self) -> None:
        self.key: tuple | None = None
        self.settled = False
        self.dirs: dict[str, _Dir] = {}  # levels 0-2: subdirectories
        self.files: dict[str, Name] = {}  # level 3: manifest file name -> its model name


class ManifestIndex:
    """The index of one store's manifests/ tree; every method is thread-safe."""

    def __init__(self, manifests: ManifestStore):
        self.manifests = manifests
        self.root_path = str(manifests.paths.manifests_dir)
        self._root = _Dir()
        self._entries: dict[str, IndexedManifest] = {}
        self._users: dict[str, set[str]] = {}
        self._unreadable: set[str] = set()
        self._lock = threading.RLock()
        self._tickets = itertools.count(1)
        self._last_refresh = 0
        self.version = 0  # changes whenever an entry is added, removed or changed
        self._sorted: tuple[int, list[IndexedManifest]] | None = None

    # -- reading the index -------------------------------------------------------------------------

    def refresh(self) -> int:
        """Brings the index up to date with the disk as of this call; returns the version.

        Concurrent callers share one walk: a walk that started after a caller arrived covers it."""
        arrived = next(self._tickets)
        with self._lock:
            if self._last_refresh > arrived:
                return self.version
            self._last_refresh = next(self._tickets)
            self._walk(self._root, self.root_path, 0, ())
            return self.version

    def snapshot(self) -> tuple[int, list[IndexedManifest]]:
        """(version, every manifest sorted by path) after a refresh."""
        with self._lock:
            version = self.refresh()
            if self._sorted is None or self._sorted[0] != version:
                self._sorted = (version, [self._entries[p] for p in sorted(self._entries)])
            return self._sorted

    @property
    def complete(self) -> bool:
        """False while some manifest file cannot be read: it might reference any blob."""
        return not self._unreadable

    def all_parsed(self) -> bool:
        """True when every manifest parsed (the start-up prune refuses to run otherwise)."""
        with self._lock:
            return not self._unreadable and all(e.manifest is not None for e in self._entries.values())

    def referenced(self) -> set[str]:
        """Every digest some manifest protects, as of the last refresh."""
        with self._lock:
            return set(self._users)

    def users(self, digest: str) -> set[str]:
        with self._lock:
            return set(self._users.get(digest, ()))

    def confirmed_user(self, digest: str) -> bool:
        """True if some manifest references `digest` now, proven by finding one on disk unchanged since it
        was read (or reading it again). False means only "not proven": refresh before concluding more."""
        with self._lock:
            # settled users first: one of them unchanged on disk is proof enough, for one stat
            users = sorted(self._users.get(digest, ()), key=lambda p: not self._entries[p].settled)
            for path in users:
                entry = self._entries.get(path)
                if entry is None:  # removed while checking an earlier user
                    continue
                if entry.settled:
                    try:
                        if stat_key(os.stat(path)) == entry.key:
                            return True
                    except (FileNotFoundError, NotADirectoryError):
                        self._remove(path)
                        continue
                self._read(path, entry.name)
                if path in self._users.get(digest, ()):
                    return True
            return False

    # -- changes this process makes ------------------------------------------------------------------

    def forget(self, path: str | os.PathLike) -> None:
        """A manifest this process deleted: drop it now, so its blobs lose a user before the next walk."""
        with self._lock:
            self._remove(str(path))

    # -- the walk ------------------------------------------------------------------------------------

    def _walk(self, node: _Dir, path: str, depth: int, parts: tuple[str, ...]) -> None:
        """Checks a directory of levels 0-2 (manifests/, a host, a namespace) and everything below it."""
        try:
            st = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            self._gone(node, path, depth)
            return
        if not self._check(node, st, path, depth, parts):
            return
        if depth < 2:
            for name, child in node.dirs.items():
                self._walk(child, f"{path}/{name}", depth + 1, (*parts, name))
            return
        # A namespace: its model directories and their manifests are the bulk of the tree, so they are
        # stat'ed relative to the namespace's descriptor (shorter lookups; the same answers).
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except (FileNotFoundError, NotADirectoryError):
            self._gone(node, path, depth)
            return
        try:
            entries = self._entries
            for model, child in node.dirs.items():
                model_path = f"{path}/{model}"
                try:
                    st = os.stat(model, dir_fd=fd)
                except (FileNotFoundError, NotADirectoryError):
                    self._gone(child, model_path, 3)
                    continue
                if not self._check(child, st, model_path, 3, (*parts, model)):
                    continue
                for tag, tag_name in child.files.items():
                    file_path = f"{model_path}/{tag}"
                    entry = entries.get(file_path)
                    if entry is not None and entry.settled:
                        try:
                            if stat_key(os.stat(f"{model}/{tag}", dir_fd=fd)) == entry.key:
                                continue
                        except (FileNotFoundError, NotADirectoryError):
                            self._remove(file_path)
                            continue
                    self._read(file_path, tag_name)
        finally:
            os.close(fd)

    def _check(self, node: _Dir, st: os.stat_result, path: str, depth: int, parts: tuple[str, ...]) -> bool:
        """Lists the directory again unless its stat shows no change since a settled listing; False if it
        turned out to be gone."""
        key = (st.st_ino, st.st_mtime_ns, st.st_ctime_ns)
        if key == node.key and node.settled:
            return True
        started = time.time_ns()
        if not self._list(node, path, depth, parts):
            return False
        node.key, node.settled = key, settled(st, started)
        return True

    def _gone(self, node: _Dir, path: str, depth: int) -> None:
        self._drop_dir(node, path, depth)
        node.key = None

    def _list(self, node: _Dir, path: str, depth: int, parts: tuple[str, ...]) -> bool:
        """Lists a directory into its node; False (and the subtree dropped) if it is gone."""
        try:
            with os.scandir(path) as it:
                found = list(it)
        except (FileNotFoundError, NotADirectoryError):
            self._gone(node, path, depth)
            return False
        if depth < 3:
            dirs = {e.name for e in found if e.is_dir()}
            for name in list(node.dirs):
                if name not in dirs:
                    self._drop_dir(node.dirs.pop(name), f"{path}/{name}", depth + 1)
            for name in sorted(dirs - node.dirs.keys()):
                node.dirs[name] = _Dir()
            return True
        files: dict[str, Name] = {}
        for e in found:
            if e.name.startswith(".tmp-") or not e.is_file():
                continue
            model = node.files.get(e.name) or self.manifests.name_of((*parts, e.name))
            if model is None:
                log.warning("skipping manifest with an invalid name: %s", e.path)
                continue
            files[e.name] = model
        for name in node.files.keys() - files.keys():
            self._remove(f"{path}/{name}")
        node.files = files
        return True

    def _drop_dir(self, node: _Dir, path: str, depth: int) -> None:
        for name, child in node.dirs.items():
            self._drop_dir(child, f"{path}/{name}", depth + 1)
        for name in node.files:
            self._remove(f"{path}/{name}")
        node.dirs, node.files = {}, {}

    # -- entries -------------------------------------------------------------------------------------

    def _read(self, path: str, name: Name) -> None:
        started = time.time_ns()
        try:
            with open(path, "rb") as f:
                st = os.fstat(f.fileno())
                if not stat.S_ISREG(st.st_mode):
                    raise IsADirectoryError(path)
                raw = f.read()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            self._remove(path)
            return
        except OSError as err:
            log.warning("cannot read manifest %s: %s", path, err)
            self._remove(path)
            self._unreadable.add(path)
            return
        self._unreadable.discard(path)
        key = stat_key(st)
        old = self._entries.get(path)
        is_settled = settled(st, started)
        if old is not None and old.key == key and old.raw == raw:
            old.settled = is_settled
            return
        manifest: Manifest | None
        try:
            manifest = Manifest.from_bytes(raw)
            digests = frozenset(parse_digest(d) for d in manifest.all_digests() if is_digest(d))
        except ValueError as err:
            log.warning("unparsable manifest %s: %s", name.full, err)
            manifest, digests = None, frozenset(find_digests(raw))
        self._remove(path)
        self._entries[path] = IndexedManifest(name, path, key, raw, manifest, digests, is_settled)
        for digest in digests:
            self._users.setdefault(digest, set()).add(path)
        self.version += 1

    def _remove(self, path: str) -> None:
        self._unreadable.discard(path)
        entry = self._entries.pop(path, None)
        if entry is None:
            return
        for digest in entry.digests:
            users = self._users.get(digest)
            if users is not None:
                users.discard(path)
                if not users:
                    del self._users[digest]
        self.version += 1
