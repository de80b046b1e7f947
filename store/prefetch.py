"""Read-ahead on a thread of its own, for a source that waits (a network upload).

Why: receiving an upload, hashing it and writing it all take time; pulling the next chunks while the
current one is hashed and written lets them overlap. The blob store uses it behind a gRPC upload and the
REST shim behind an HTTP body (the shim may import this pure module, as it does store/config.py).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator


class Prefetch:
    """Pulls an iterator on its own thread, at most `depth` items ahead; re-raises its errors in order.
    close() drops what was fetched and lets the thread end at its next item (it is not waited for: it
    may be waiting for a client that is still sending, until the call ends); join() waits for it."""

    _END = object()

    def __init__(self, items: Iterable, depth: int = 2, name: str = "prefetch"):
        self.items = iter(items)
        self.queue: queue.Queue = queue.Queue(maxsize=depth)
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    def _put(self, item) -> bool:
        while not self.stopped.is_set():
            try:
                self.queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            for item in self.items:
                if not self._put(item):
                    return
        except BaseException as exc:  # handed to the consumer, raised there
            self._put((self._END, exc))
            return
        self._put((self._END, None))

    def __iter__(self) -> Iterator:
        while True:
            item = self.queue.get()
            if type(item) is tuple and item and item[0] is self._END:
                if item[1] is not None:
                    raise item[1]
                return
            yield item

    def close(self) -> None:
        self.stopped.set()
        while True:
            try:
                self.queue.get_nowait()
            except queue.Empty:
                break

    def join(self) -> None:
        self.thread.join()
