"""The parent side of a model runner: one child process per loaded model, spoken to over a Pipe.

Why a child process: llama.cpp calls abort() on some malformed files and can segfault (a mismatched LoRA
adapter), which would take the whole server down if the model lived in the server process. Ollama runs
its runners as subprocesses for the same reason. Here a runner that dies turns into a clean INTERNAL
error ("llama runner process has terminated: ...") for the requests it was serving, the scheduler drops
it, and the next request loads a fresh one.

Why 'forkserver' (or 'spawn'), never 'fork': the gRPC server is multi-threaded and forking a threaded
process can deadlock the child. The forkserver preloads llama_cpp once, so each later runner starts by
forking that clean single-threaded process, which keeps load latency low.

Protocol (pickled tuples over one duplex multiprocessing Connection; see worker.py for the child):
    child -> parent  ("ready", info) | ("load_error", text)          once, after loading
    parent -> child  (kind, req_id, payload)   kind in {"embed", "generate", "tokenize"}
                     ("cancel", req_id)        stop that request at its next token, batch or piece of
                                               text being tokenized
                     ("close",)                stop the work in progress likewise, and exit
    child -> parent  ("item", req_id, payload)  zero or more partial results (generate: text, at most
                                                one message per 20 ms and request; see generation.py)
                     ("done", req_id, payload)  or ("error", req_id, code, text): exactly one, last
Several requests may be in flight: one reader thread here routes replies to per-request queues, and the
child decodes up to num_parallel (config) generate requests together.
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing
import queue
import signal
import threading
from collections.abc import Iterator

from corral.service import metrics
from corral.store.errors import Cancelled, CorralError, Internal

log = logging.getLogger("corral.engine")

_ERRORS = {cls.code: cls for cls in CorralError.__subclasses__()}
_SIGNALS = {
    signal.SIGKILL: "killed", signal.SIGABRT: "aborted (core dumped)", signal.SIGSEGV: "segmentation fault",
    signal.SIGILL: "illegal instruction", signal.SIGBUS: "bus error", signal.SIGTERM: "terminated",
    signal.SIGFPE: "floating point exception",
}
_context = None
_context_lock = threading.Lock()


def mp_context():
    """A forkserver context with llama_cpp preloaded (spawn where forkserver is unavailable)."""
    global _context
    with _context_lock:
        if _context is None:
            try:
                _context = multiprocessing.get_context("forkserver")
                _context.set_forkserver_preload(["llama_cpp", "corral.service.engine.worker"])
            except ValueError:
                _context = multiprocessing.get_context("spawn")
        return _context


def warm_up() -> None:
    """Starts the forkserver (a fresh interpreter importing llama_cpp, ~0.3 s) ahead of the first load,
    so the first request does not pay for it. Safe to call many times; errors surface at load."""
    ctx = mp_context()
    if ctx.get_start_method() == "forkserver":
        try:
            from multiprocessing import forkserver

            forkserver.ensure_running()
        except Exception:
            log.debug("forkserver warm-up failed", exc_info=True)


def exit_text(exitcode: int | None) -> str:
    """Go's ProcessState wording, as in Ollama's 'llama runner process has terminated: <this>'."""
    if exitcode is None:
        return "exit status unknown"
    if exitcode < 0:
        try:
            return "signal: " + _SIGNALS.get(signal.Signals(-exitcode), signal.Signals(-exitcode).name)
        except ValueError:
            return f"signal: {-exitcode}"
    return f"exit status {exitcode}"


def error_from(code: str, text: str) -> CorralError:
    return _ERRORS.get(code, Internal)(text)


class RunnerDied(Internal):
    """The child process went away; the scheduler drops the runner."""


class Runner:
    """A live child process serving one model. Thread-safe: many callers may call request() at once."""

    def __init__(self, config: dict, start_timeout: float = 300.0):
        self.config = config
        ctx = mp_context()
        self._conn, child_conn = ctx.Pipe(duplex=True)
        from corral.service.engine import worker

        self.process = ctx.Process(target=worker.main, args=(child_conn, config), name="corral-runner", daemon=True)
        self.process.start()
        child_conn.close()
        self._send_lock = threading.Lock()
        self._pending: dict[int, queue.SimpleQueue] = {}
        self._pending_lock = threading.Lock()
        self._ids = itertools.count(1)
        self._dead: str | None = None
        self._closing = False
        self.info = self._handshake(start_timeout)
        self._reader = threading.Thread(target=self._read_loop, name="runner-reader", daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int | None:
        return self.process.pid

    @property
    def alive(self) -> bool:
        return self._dead is None  # set by the reader thread as soon as the pipe closes

    def _handshake(self, timeout: float) -> dict:
        try:
            if not self._conn.poll(timeout):
                raise Internal("timed out waiting for llama runner to start")
            message = self._conn.recv()
        except (EOFError, OSError):
            self.process.join(5)
            self._close_conn()
            raise Internal(f"llama runner process has terminated: {exit_text(self.process.exitcode)}") from None
        except Internal:
            self.kill()
            raise
        if message[0] == "ready":
            return message[1]
        self.process.join(5)
        self._close_conn()
        raise Internal(f"llama runner process has terminated: {message[1]}")

    def _read_loop(self):
        try:
            while True:
                message = self._conn.recv()
                with self._pending_lock:
                    q = self._pending.get(message[1])
                if q is not None:
                    q.put(message)
        except (EOFError, OSError):
            pass
        except Exception:
            log.exception("runner reader failed")
        self.process.join(5)
        self._dead = exit_text(self.process.exitcode)
        if not self._closing and self.process.exitcode not in (0, None, -signal.SIGTERM):
            log.warning("llama runner pid %s terminated: %s", self.pid, self._dead)
            metrics.RUNNER_CRASHES.inc()
        with self._pending_lock:
            waiting = list(self._pending.values())
        for q in waiting:
            q.put(("dead", None, self._dead))

    def _send(self, message) -> None:
        with self._send_lock:
            self._conn.send(message)

    def request(self, kind: str, payload: dict, cancel: threading.Event | None = None) -> Iterator:
        """Sends one request; yields its partial results and returns (StopIteration.value) its final one.

        Raises the child's error as the matching CorralError, RunnerDied when the process dies, and
        Cancelled once `cancel` is set (after telling the child to stop). Closing the generator early
        cancels the request too.
        """
        req_id = next(self._ids)
        q: queue.SimpleQueue = queue.SimpleQueue()
        with self._pending_lock:
            self._pending[req_id] = q
        finished = False
        try:
            if not self.alive:
                why = self._dead or exit_text(self.process.exitcode)
                raise RunnerDied(f"llama runner process has terminated: {why}")
            try:
                self._send((kind, req_id, payload))
            except (OSError, ValueError, EOFError):
                raise RunnerDied("llama runner process has terminated: " + exit_text(self.process.exitcode)) from None
            while True:
                try:
                    message = q.get(timeout=0.05 if cancel is not None else None)
                except queue.Empty:
                    if cancel is not None and cancel.is_set():
                        raise Cancelled("request canceled") from None
                    continue
                tag = message[0]
                if cancel is not None and cancel.is_set() and tag in ("item", "done"):
                    raise Cancelled("request canceled")
                if tag == "item":
                    yield message[2]
                elif tag == "done":
                    finished = True
                    return message[2]
                elif tag == "error":
                    finished = True
                    raise error_from(message[2], message[3])
                else:  # "dead"
                    finished = True
                    raise RunnerDied(f"llama runner process has terminated: {message[2]}")
        finally:
            if not finished and self.alive:
                try:
                    self._send(("cancel", req_id))
                except (OSError, ValueError):
                    pass
            with self._pending_lock:
                self._pending.pop(req_id, None)

    def call(self, kind: str, payload: dict, cancel: threading.Event | None = None):
        """request() for replies without partial results: returns (items, final)."""
        gen = self.request(kind, payload, cancel)
        items = []
        while True:
            try:
                items.append(next(gen))
            except StopIteration as stop:
                return items, stop.value

    def close(self, timeout: float = 5.0) -> None:
        """Asks the child to exit; kills it if it does not within `timeout` seconds."""
        self._closing = True
        if self.process.is_alive():
            try:
                self._send(("close",))
            except (OSError, ValueError):
                pass
            self.process.join(timeout)
        self.kill()

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()
            self.process.join(5)
        self._close_conn()

    def _close_conn(self):
        try:
            self._conn.close()
        except OSError:
            pass

