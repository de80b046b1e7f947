"""Noticing an HTTP client that went away while its request waits on gRPC, to cancel the call behind it.

Why: a WSGI server learns that a client left only when it writes to it. A generate or chat request
writes nothing until its first token, which comes after the prompt is read (a prompt of num_ctx tokens
can take minutes on a CPU), and with "stream": false nothing until the very end; meanwhile the model is
held for nobody and the requests queued behind it wait. Ollama's Go server cancels the request's
context as soon as the connection's read side sees EOF; this does the same: one thread watches, with
epoll, the sockets of the requests that are waiting, and calls a request's callback (the gRPC call's
cancel) once its peer has closed (EPOLLRDHUP, also seen through TLS, since it is the TCP state).

The socket is found through cheroot's request body (wsgi.input -> its connection's reader -> fileno());
under another server (Flask's test client) there is none, and nothing is watched.
"""

from __future__ import annotations

import logging
import select
import threading
from collections.abc import Callable

log = logging.getLogger("corral.rest")

_EVENTS = getattr(select, "EPOLLRDHUP", 0x2000) | select.EPOLLHUP | select.EPOLLERR


def client_fd(environ) -> int | None:
    """The file descriptor of the request's client connection, or None when it cannot be found."""
    body = environ.get("wsgi.input")
    reader = getattr(body, "rfile", None)
    try:
        fd = reader.fileno() if reader is not None else -1
    except (OSError, ValueError, AttributeError):
        return None
    return fd if isinstance(fd, int) and fd >= 0 else None


class _Watcher:
    """The one thread that waits for peers to close; started on first use."""

    def __init__(self):
        self._lock = threading.Lock()
        self._epoll: select.epoll | None = None
        self._callbacks: dict[int, Callable[[], None]] = {}

    def _start(self) -> select.epoll:
        if self._epoll is None:  # sockets registered later are seen by the poll already waiting
            self._epoll = select.epoll()
            threading.Thread(target=self._run, name="rest-disconnect-watch", daemon=True).start()
        return self._epoll

    def watch(self, fd: int, callback: Callable[[], None]) -> bool:
        with self._lock:
            epoll = self._start()
            if fd in self._callbacks:
                return False
            try:
                epoll.register(fd, _EVENTS)
            except OSError:
                return False
            self._callbacks[fd] = callback
            return True

    def unwatch(self, fd: int, callback: Callable[[], None]) -> None:
        with self._lock:
            if self._callbacks.get(fd) is callback:
                del self._callbacks[fd]
                assert self._epoll is not None
                try:
                    self._epoll.unregister(fd)
                except OSError:
                    pass

    def _run(self) -> None:
        assert self._epoll is not None
        while True:
            try:
                events = self._epoll.poll()
            except InterruptedError:
                continue
            gone = []
            with self._lock:
                for fd, _ in events:
                    callback = self._callbacks.pop(fd, None)
                    if callback is not None:
                        try:
                            self._epoll.unregister(fd)
                        except OSError:
                            pass
                        gone.append(callback)
            for callback in gone:
                try:
                    callback()
                except Exception:
                    log.exception("disconnect callback failed")


_watcher = _Watcher()


class Watch:
    """Calls `on_gone` once if the client of `environ` closes its connection before stop() is called.
    Use as a context manager, or call stop() when the response no longer waits."""

    def __init__(self, environ, on_gone: Callable[[], None]):
        self._fd = client_fd(environ)
        self._callback = on_gone
        if self._fd is not None and not _watcher.watch(self._fd, on_gone):
            self._fd = None

    def stop(self) -> None:
        if self._fd is not None:
            _watcher.unwatch(self._fd, self._callback)
            self._fd = None

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
