"""Which models are loaded, for how long, and who may use them: Ollama's scheduler (server/sched.go).

Why: loading a model costs time and memory, so runners stay loaded for their keep_alive after the last
request, at most `max_loaded` (or a memory budget's worth) at once, evicting the least recently used idle
one to make room. Each model serves `num_parallel` requests at a time; the rest wait, up to `max_queue`
waiting requests in all, past which the caller gets Ollama's 503 text. The loader is passed in (as in
Ollama, where tests replace it), so tests can count loads and use fake runners.

keep_alive rules (spec §5): the latest request's value replaces the model's (and its name and details
replace the model's in ps, as several names may share one model file); the timer starts when the
model's last request finishes; 0 unloads right after it; None means forever. expires_at stays unchanged
while a request runs, and is now + keep_alive while loading and again when the model goes idle.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from corral.service import metrics
from corral.store.errors import Cancelled, Unavailable

log = logging.getLogger("corral.engine")

BUSY = "server busy, please try again.  maximum pending requests exceeded"
FOREVER_SECONDS = (2**63 - 1) / 1e9  # what Ollama shows for an infinite keep-alive


@dataclass
class Entry:
    key: str
    options: dict
    meta: dict  # name, digest, details, ... for ps
    size: int = 0
    runner: object = None
    loading: bool = True
    active: int = 0
    keep_alive: float | None = 300.0
    expires_at: float | None = None  # epoch seconds; None = forever
    last_used: float = field(default_factory=time.monotonic)
    unload_when_idle: bool = False

    @property
    def alive(self) -> bool:
        return self.runner is not None and getattr(self.runner, "alive", True)


class Lease:
    """A slot on a loaded runner for one request; release it (or use `with`) when the request ends."""

    def __init__(self, scheduler: Scheduler, entry: Entry, load_seconds: float):
        self.scheduler = scheduler
        self.entry = entry
        self.runner = entry.runner
        self.load_seconds = load_seconds
        self._released = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self.scheduler._release(self.entry)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()


class Scheduler:
    def __init__(
        self,
        loader: Callable[[str, dict, dict], object],
        *,
        max_loaded: int = 3,
        num_parallel: int = 1,
        max_queue: int = 512,
        default_keep_alive: float | None = 300.0,
        memory_budget: int | None = None,
        clock: Callable[[], float] = time.time,
    ):
        """loader(key, options, meta) -> runner (with .close(), optional .alive); it may raise."""
        self.loader = loader
        self.max_loaded = max(1, max_loaded)
        self.num_parallel = max(1, num_parallel)
        self.max_queue = max(1, max_queue)
        self.default_keep_alive = default_keep_alive
        self.memory_budget = memory_budget
        self.clock = clock
        self.loaded: dict[str, Entry] = {}
        self.pending = 0
        self._cond = threading.Condition()
        self._closed = False
        self._timer = threading.Thread(target=self._expire_loop, name="scheduler-expiry", daemon=True)
        self._timer.start()

    # -- requests ------------------------------------------------------------------------------------

    def acquire(self, key: str, options: dict, meta: dict, keep_alive="default", size=0,
                cancel: threading.Event | None = None) -> Lease:
        """A slot on the runner for `key` loaded with `options`, loading (and evicting) as needed.

        keep_alive: seconds, None = forever, "default" = the server default. size: bytes (or a callable
        giving them) the model will use, for the memory budget. Raises Unavailable when the
        queue is full, Cancelled when `cancel` is set while waiting, or whatever the loader raised.
        """
        keep = self.default_keep_alive if keep_alive == "default" else keep_alive
        with self._cond:
            if self.pending >= self.max_queue:
                metrics.SCHEDULER_REJECTIONS.inc()
                raise Unavailable(BUSY)
            self.pending += 1
            try:
                while True:
                    if self._closed:
                        raise Unavailable("server is shutting down")
                    if cancel is not None and cancel.is_set():
                        raise Cancelled("request canceled")
                    entry = self.loaded.get(key)
                    if entry is not None and not entry.loading and not entry.alive:
                        self._drop(entry)  # a runner that died: forget it, load a new one
                        continue
                    if entry is not None and not entry.loading and entry.options != options:
                        entry.unload_when_idle = True  # other load options: reload once idle
                        if entry.active == 0:
                            self._drop(entry)
                            continue
                    elif entry is not None and not entry.loading and not entry.unload_when_idle \
                            and entry.active < self.num_parallel:
                        entry.active += 1
                        entry.keep_alive = keep
                        entry.meta = meta  # ps shows the latest request's name when names share a model
                        entry.last_used = time.monotonic()
                        return Lease(self, entry, 0.0)
                    elif entry is None:
                        size = size() if callable(size) else size  # only computed when loading
                        if self._make_room(size):
                            return self._load(key, options, meta, keep, size)
                    self._cond.wait(0.05 if cancel is not None else 1.0)
            finally:
                self.pending -= 1

    def _make_room(self, size: int) -> bool:
        """Evicts idle LRU runners until a new one fits; False if it must wait for a busy one."""
        while True:
            used = sum(e.size for e in self.loaded.values())
            over_count = len(self.loaded) >= self.max_loaded
            over_memory = self.memory_budget is not None and self.loaded and used + size > self.memory_budget
            if not over_count and not over_memory:
                return True
            idle = [e for e in self.loaded.values() if not e.loading and e.active == 0]
            if not idle:
                return False
            victim = min(idle, key=lambda e: e.last_used)
            log.info("evicting %s to make room", victim.meta.get("name", victim.key))
            metrics.MODEL_EVICTIONS.inc()
            self._drop(victim)

    def _load(self, key, options, meta, keep, size) -> Lease:
        """Called with the lock held; loads without it so other models keep serving."""
        entry = Entry(key=key, options=options, meta=meta, size=size, keep_alive=keep, active=1)
        entry.expires_at = self._expiry(keep)
        self.loaded[key] = entry
        started = time.monotonic()
        self._cond.release()
        try:
            runner = self.loader(key, options, meta)
        except BaseException:
            self._cond.acquire()
            self.loaded.pop(key, None)
            self._cond.notify_all()
            raise
        self._cond.acquire()
        entry.runner = runner
        entry.loading = False
        entry.size = getattr(runner, "size", 0) or size
        entry.last_used = time.monotonic()
        self._cond.notify_all()
        return Lease(self, entry, time.monotonic() - started)

    def _release(self, entry: Entry) -> None:
        with self._cond:
            entry.active -= 1
            entry.last_used = time.monotonic()
            if entry.active == 0:
                if entry.keep_alive == 0 or entry.unload_when_idle or not entry.alive:
                    if self.loaded.get(entry.key) is entry:
                        self._drop(entry)
                else:
                    entry.expires_at = self._expiry(entry.keep_alive)
            self._cond.notify_all()

    # -- unloading -----------------------------------------------------------------------------------

    def unload(self, key: str) -> None:
        """Expire a model now: unloaded at once if idle, else after its in-flight requests finish."""
        with self._cond:
            entry = self.loaded.get(key)
            if entry is None:
                return
            entry.keep_alive = 0
            if entry.active == 0 and not entry.loading:
                self._drop(entry)
            else:
                entry.unload_when_idle = True
            self._cond.notify_all()

    def _drop(self, entry: Entry) -> None:
        """Removes an entry (lock held) and closes its runner in the background."""
        if self.loaded.get(entry.key) is entry:
            del self.loaded[entry.key]
        runner, entry.runner = entry.runner, None
        if runner is not None:
            threading.Thread(target=_close, args=(runner,), name="runner-close", daemon=True).start()
        self._cond.notify_all()

    def _expiry(self, keep: float | None) -> float | None:
        return None if keep is None else self.clock() + keep

    def _expire_loop(self) -> None:
        with self._cond:
            while not self._closed:
                now = self.clock()
                soonest = None
                for entry in list(self.loaded.values()):
                    if entry.loading or entry.active or entry.expires_at is None:
                        continue
                    if entry.expires_at <= now:
                        log.info("keep_alive expired for %s", entry.meta.get("name", entry.key))
                        self._drop(entry)
                    elif soonest is None or entry.expires_at < soonest:
                        soonest = entry.expires_at
                self._cond.wait(min(max(soonest - now, 0.01), 1.0) if soonest else 1.0)

    def close(self) -> None:
        """Closes every runner at once (each stops its work in progress, or is killed after a few
        seconds), so a shutdown takes the time of the slowest runner, not of all of them in turn."""
        with self._cond:
            self._closed = True
            entries = list(self.loaded.values())
            self.loaded.clear()
            self._cond.notify_all()
        closing = [threading.Thread(target=_close, args=(entry.runner,), name="runner-close", daemon=True)
                   for entry in entries if entry.runner is not None]
        for thread in closing:
            thread.start()
        for thread in closing:
            thread.join()

    # -- ps -------------------------------------------------------------------------------------------

    def running(self) -> list[dict]:
        """Loaded models, latest expiry first: meta plus size, expires_at (epoch s), options."""
        with self._cond:
            rows = []
            for entry in self.loaded.values():
                if entry.loading or not entry.alive:
                    continue
                expires = entry.expires_at if entry.expires_at is not None else self.clock() + FOREVER_SECONDS
                rows.append({**entry.meta, "key": entry.key, "size": entry.size, "expires_at": expires,
                             "options": dict(entry.options), "runner": entry.runner, "active": entry.active})
        return sorted(rows, key=lambda r: r["expires_at"], reverse=True)


def _close(runner) -> None:
    try:
        runner.close()
    except Exception:
        log.exception("closing runner failed")
