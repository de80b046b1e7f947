"""Dynamic batching of embeddings: concurrent callers of one loaded model share llama.cpp batches.

Why: one request of one text keeps a runner busy for a few milliseconds, and between two such requests
the runner waits for the parent (reply, next request, a lease). Many clients sending one text each got a
third of the throughput of one list of the same texts. Embedding servers (HF text-embeddings-inference,
Infinity) batch concurrent requests dynamically; so does this module.

Design: one Batcher per runner (scheduler key + load options). A caller (an Embed or Embeddings request,
or an EmbedStream) opens a Member, adds inputs (a stream keeps adding) and reads Chunks of raw vectors in
input order. LANES lane threads per batcher hold the runner's lease while any member is open (so a
stream loads the model once, whatever its pauses), and each in turn forms a batch and sends it to the
runner child as one "embed" request. With two lanes the child never waits for the parent (one batch
computes while the next is queued), but each batch gets half the waiting inputs; one lane sends fewer,
larger batches, and larger batches cost less per input (embedding.py). Measured with 16 and 4 clients
of one text each on 2 cores, one lane served 444-464 and 300-311 texts/s, two lanes 389-413 and 178-273:
the round trip to the parent is short next to a batch. A batch is filled round-robin over the members with pending
inputs, one input from each in turn, up to a token budget (the model's num_batch, estimated from the
text length: the child counts exactly), so a huge request shares every batch with the small ones
instead of starving them, and one request's inputs may span many batches. Batches are delivered in the
order they were sent, so each member's rows arrive in its input order.

A member that goes away (cancelled, deadline) has its pending inputs removed at once; its rows of a
batch already in flight are dropped when the batch returns, and a batch in flight whose members are all
gone is cancelled in the runner (an input of num_ctx tokens on a completion model can take long). A bad
input (too long with truncate=false) fails alone: the child reports it by index and the member decides
(Embed fails the call, EmbedStream reports the item). keep_alive: the scheduler applies a request's
keep_alive when it hands out a lease; since one lease now serves many requests, each member's keep_alive
is applied to the loaded model when it opens (the latest request's value wins, as in Ollama), and the
timer starts when the last member closes and the lease is released.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from corral.store.errors import Cancelled, CorralError, Internal, Unavailable

if TYPE_CHECKING:
    from corral.service.engine.runner import Runner
    from corral.service.engine.scheduler import Lease

log = logging.getLogger("corral.engine")

LANES = 1  # batches in flight per runner (see the module docstring for why one)
IDLE_SECONDS = 10.0  # a batcher without members for this long ends its threads (a new one starts on demand)
BUSY = "server busy, please try again.  maximum pending requests exceeded"
SHUTDOWN = "server is shutting down"
_DONE = object()


Input = str | list[int]  # a text, or token ids (OpenAI's token input)


def estimate_tokens(text: Input) -> int:
    """A cheap estimate of a text's tokens, only for sizing batches (the runner counts exactly): about 4
    characters per token for ASCII text, 3 UTF-8 bytes per token otherwise (CJK is about a token a
    character), plus the special tokens around an input. An input of token ids is its length."""
    if isinstance(text, list):
        return len(text) + 2
    if text.isascii():
        return len(text) // 4 + 2
    return len(text.encode("utf-8")) // 3 + 2


@dataclass
class Chunk:
    """Consecutive rows of one member, as the runner produced them."""

    first: int  # the member's index of the first row (inputs are numbered from 0 as they are added)
    vectors: np.ndarray  # (rows, n_embd) float32, raw (not normalised); zeros where errors has the row
    counts: list[int]  # tokens per row, after truncation
    errors: dict[int, tuple[str, str]]  # row within this chunk -> (status code name, Ollama's text)


class Member:
    """One caller of a Batcher. Thread-safe: one thread may add inputs while another reads chunks."""

    def __init__(self, batcher: Batcher, truncate: bool):
        self.batcher = batcher
        self.truncate = truncate
        self.pending: deque[tuple[int, Input, int]] = deque()  # (index, input, estimated tokens)
        self.added = 0  # inputs added so far
        self.answered = 0  # inputs whose rows were delivered
        self.tokens = 0  # tokens of the delivered rows
        self.loaded = False  # the runner was leased for this member
        self.load_seconds = 0.0  # how long the model load took, when this member waited for it
        self.finished = False  # no more inputs will be added
        self.closed = False
        self._done_sent = False
        self._events: queue.SimpleQueue = queue.SimpleQueue()

    def add(self, texts: Sequence[Input]) -> int:
        """Queues inputs; returns the index of the first. Ignored once the member is closed."""
        return self.batcher._add(self, texts)

    def finish(self) -> None:
        """No more inputs: chunks() ends once every input is answered."""
        self.batcher._finish(self)

    def chunks(self, cancel: threading.Event | None = None) -> Iterator[Chunk]:
        """Rows in input order as batches finish; returns when finished, loaded and all answered.

        Raises the error that failed the member (load failure, runner death, shutdown), and Cancelled
        once `cancel` is set.
        """
        while True:
            if cancel is None:
                event = self._events.get()
            else:
                try:
                    event = self._events.get(timeout=0.05)
                except queue.Empty:
                    if cancel.is_set():
                        raise Cancelled("request canceled") from None
                    continue
            if event is _DONE:
                return
            if isinstance(event, BaseException):
                raise event
            if cancel is not None and cancel.is_set():
                raise Cancelled("request canceled")
            yield event

    def fail(self, exc: BaseException) -> None:
        """Ends the member with this error, which chunks() raises (e.g. a stream's bad message)."""
        with self.batcher._cond:
            self.batcher._fail(self, exc)

    def close(self) -> None:
        """Leaves the batcher: pending inputs are dropped, rows of batches in flight are discarded."""
        self.batcher._close(self)

    def __enter__(self) -> Member:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


Acquire = Callable[[object, threading.Event], "Lease"]  # (keep_alive, cancel) -> a lease on the runner
Batch = list[tuple[Member, int, Input]]  # (member, the member's index of the input, input)


class Batcher:
    """The members and lane threads of one runner. Use Batchers.open(); see the module docstring."""

    def __init__(self, registry: Batchers, key: tuple, budget: int):
        self.registry = registry
        self.key = key
        self.budget = max(1, budget)
        lock = threading.Lock()
        self._cond = threading.Condition(lock)  # lanes wait here for work; notified one at a time
        self._turn = threading.Condition(lock)  # senders wait here to deliver in ticket order
        self._members: list[Member] = []
        self._queued = 0  # pending inputs of all members
        self._rr = 0  # round-robin position in _members
        self._acquire: Acquire | None = None
        self._keep: object = "default"
        self._lease: Lease | None = None
        self._acquiring = False
        self._stop: threading.Event | None = None  # cancels a lease acquisition when no member is left
        self._in_flight = 0
        self._issued = 0  # tickets: batches are delivered in the order they were sent
        self._delivered = 0
        self._widest = 0  # the most members one batch served (diagnostics)
        self._flights: dict[int, tuple[Batch, threading.Event]] = {}  # ticket -> batch in flight, its cancel
        self._closed = False
        self._exited = False
        self._lanes = [threading.Thread(target=self._lane, name=f"embed-batcher-{i}", daemon=True)
                       for i in range(LANES)]
        for lane in self._lanes:
            lane.start()

    # -- members (called by callers' threads) -----------------------------------------------------------

    def _open(self, acquire: Acquire, truncate: bool, keep_alive: object) -> Member:
        with self._cond:
            if self._closed:
                raise Unavailable(SHUTDOWN)
            waiting = self._lease is None or self._draining(self._lease)
            if len(self._members) >= self.registry.max_members() or (waiting and self.registry.queue_full()):
                raise Unavailable(BUSY)
            member = Member(self, truncate)
            self._members.append(member)
            self._acquire, self._keep = acquire, keep_alive
            if self._lease is not None:
                self._touch(self._lease)
                if not self._draining(self._lease):
                    member.loaded = True
            elif not self._acquiring:
                self._cond.notify()  # a lane leases the runner
            return member

    def _add(self, member: Member, texts: Sequence[Input]) -> int:
        items = [(text, estimate_tokens(text)) for text in texts]
        with self._cond:
            first = member.added
            if member.closed:
                return first
            for text, estimate in items:
                member.pending.append((member.added, text, estimate))
                member.added += 1
            if items:
                self._queued += len(items)
                self._cond.notify()
            return first

    def _finish(self, member: Member) -> None:
        with self._cond:
            member.finished = True
            self._check_done(member)

    def _close(self, member: Member) -> None:
        with self._cond:
            self._remove(member)

    def _remove(self, member: Member) -> None:
        member.closed = True
        self._queued -= len(member.pending)
        member.pending.clear()
        if member in self._members:
            self._members.remove(member)
        for batch, stop in self._flights.values():
            if not stop.is_set() and all(m.closed for m, _, _ in batch):
                stop.set()  # nobody waits for this batch any more: the runner stops computing it
        if not self._members:
            if self._stop is not None:
                self._stop.set()
            if self._lease is not None:
                self._cond.notify()  # a lane releases the lease

    def _fail(self, member: Member, exc: BaseException) -> None:
        if not member.closed:
            member._events.put(_fresh(exc))
            self._remove(member)

    def _check_done(self, member: Member) -> None:
        if (member.finished and member.loaded and member.answered == member.added and not member.closed
                and not member._done_sent):
            member._done_sent = True
            member._events.put(_DONE)

    # -- the lease --------------------------------------------------------------------------------------

    def _touch(self, lease) -> None:
        """The latest member's keep_alive becomes the model's (what the scheduler does when it hands out
        a lease; here one lease serves many requests)."""
        keep = self._keep
        lease.entry.keep_alive = lease.scheduler.default_keep_alive if keep == "default" else keep

    @staticmethod
    def _draining(lease) -> bool:
        """The runner died, or the scheduler wants it back (unload, other load options): stop sending,
        release the lease once the batches in flight are back, and lease again for what is left."""
        return not lease.runner.alive or lease.entry.unload_when_idle

    # -- lanes ------------------------------------------------------------------------------------------

    def _lane(self) -> None:
        try:
            while self._lane_step():
                pass
        except Exception:  # a bug: fail this batcher's members, and let a new batcher serve the next ones
            log.exception("embedding batcher failed")
            self.registry._exit(self, force=True)
            with self._cond:
                self._closed = True
                for member in list(self._members):
                    self._fail(member, Internal("embedding batcher failed"))
                self._cond.notify_all()
                self._turn.notify_all()

    def _lane_step(self) -> bool:
        """One action of a lane: lease the runner, send a batch, or release the lease. False to end."""
        batch: Batch = []
        ticket = 0
        with self._cond:
            while True:
                if self._closed or self._exited:
                    return False
                lease = self._lease
                if lease is None:
                    if self._members and not self._acquiring:
                        self._acquiring = True
                        self._stop = stop = threading.Event()
                        acquire, keep = self._acquire, self._keep
                        action = "lease"
                        break
                elif (not self._members or self._draining(lease)) and self._in_flight == 0:
                    self._lease = None
                    action = "release"
                    break
                elif self._in_flight < LANES and not self._draining(lease):
                    batch = self._form()
                    if batch:
                        ticket = self._issued
                        self._issued += 1
                        self._in_flight += 1
                        if self._queued and self._in_flight < LANES:
                            self._cond.notify()  # the other lane can send the next batch meanwhile
                        action = "send"
                        break
                # With a lease, wake now and then: the scheduler may want the runner back (draining).
                if not self._cond.wait(1.0 if lease is not None else IDLE_SECONDS) and not self._members \
                        and self._lease is None and not self._acquiring:
                    self._cond.release()
                    try:
                        if self.registry._exit(self):
                            return False
                    finally:
                        self._cond.acquire()
        if action == "lease":
            assert acquire is not None
            self._lease_runner(acquire, keep, stop)
        elif action == "release":
            assert lease is not None
            lease.release()
        else:
            assert lease is not None
            self._send(lease, batch, ticket)
        return True

    def _lease_runner(self, acquire: Acquire, keep: object, stop: threading.Event) -> None:
        try:
            lease = acquire(keep, stop)
        except Exception as exc:
            with self._cond:
                self._acquiring = False
                if not (isinstance(exc, Cancelled) and stop.is_set()):
                    for member in list(self._members):  # the load failed: every waiting member fails
                        self._fail(member, exc)
                self._cond.notify_all()
            return
        with self._cond:
            self._acquiring = False
            self._lease = lease
            self._touch(lease)
            for member in self._members:
                if not member.loaded:
                    member.loaded = True
                    member.load_seconds = lease.load_seconds
                    self._check_done(member)
            self._cond.notify_all()  # lanes start sending (or the one that leased releases again)

    def _form(self) -> Batch:
        """Takes one pending input from each member in turn, starting after the member served last,
        until the token budget is reached (a single input may exceed it and then goes alone)."""
        members = self._members
        n = len(members)
        start = self._rr % n if n else 0
        order = [m for m in members[start:] + members[:start] if m.pending]
        batch: Batch = []
        tokens = 0
        last = None
        while order:
            still = []
            for member in order:
                index, text, estimate = member.pending[0]
                if batch and tokens + estimate > self.budget:
                    order = []
                    break
                member.pending.popleft()
                self._queued -= 1
                batch.append((member, index, text))
                tokens += estimate
                last = member
                if member.pending:
                    still.append(member)
            else:
                order = still
        if last is not None:
            self._rr = members.index(last) + 1
            self._widest = max(self._widest, len({id(member) for member, _, _ in batch}))
        return batch

    def _send(self, lease: Lease, batch: Batch, ticket: int) -> None:
        runner: Runner = lease.runner  # type: ignore[assignment]  # the scheduler types runners as object
        flags = [member.truncate for member, _, _ in batch]
        payload = {"inputs": [text for _, _, text in batch],
                   "truncate": flags[0] if all(f == flags[0] for f in flags) else flags}
        stop = threading.Event()
        with self._cond:
            self._flights[ticket] = (batch, stop)
            if all(member.closed for member, _, _ in batch) or self._closed:
                stop.set()
        outcome: dict | BaseException
        try:
            _, outcome = runner.call("embed", payload, stop)
        except CorralError as exc:
            outcome = exc
        except Exception as exc:
            log.exception("embedding batch failed")
            outcome = Internal(str(exc) or exc.__class__.__name__)
        with self._cond:
            while self._delivered != ticket:
                self._turn.wait()
            try:
                self._flights.pop(ticket, None)
                self._deliver(batch, outcome)
            finally:
                self._delivered += 1
                self._in_flight -= 1
                self._turn.notify_all()
                if self._queued or not self._members or self._draining(lease):
                    self._cond.notify()  # a lane sends the next batch, or releases the lease

    def _deliver(self, batch: Batch, outcome: dict | BaseException) -> None:
        """Splits a finished batch into one Chunk per member still open (lock held)."""
        positions: dict[Member, list[int]] = {}
        for pos, (member, _, _) in enumerate(batch):
            positions.setdefault(member, []).append(pos)
        if isinstance(outcome, BaseException):
            for member in positions:
                self._fail(member, outcome)
            return
        vectors, counts, errors = outcome["vectors"], outcome["counts"], outcome["errors"]
        for member, rows in positions.items():
            if member.closed:
                continue
            first = batch[rows[0]][1]
            picked = vectors[rows[0] : rows[0] + 1] if len(rows) == 1 else vectors[rows]
            row_counts = [counts[p] for p in rows]
            row_errors = {k: errors[p] for k, p in enumerate(rows) if p in errors} if errors else {}
            member.answered += len(rows)
            member.tokens += sum(row_counts)
            member._events.put(Chunk(first, picked, row_counts, row_errors))
            self._check_done(member)

    # -- shutdown ---------------------------------------------------------------------------------------

    def close(self) -> None:
        with self._cond:
            self._closed = True
            for member in list(self._members):
                self._fail(member, Unavailable(SHUTDOWN))
            if self._stop is not None:
                self._stop.set()
            for _, stop in self._flights.values():
                stop.set()
            self._cond.notify_all()
            self._turn.notify_all()

    def stats(self) -> dict:
        """What is queued now (for tests and diagnostics)."""
        with self._cond:
            return {"members": len(self._members), "pending": sum(len(m.pending) for m in self._members),
                    "in_flight": self._in_flight, "leased": self._lease is not None, "batches": self._issued,
                    "widest": self._widest}


class Batchers:
    """The batchers of one engine, one per runner key; each ends its threads when idle.

    Ollama's queue limit (OLLAMA_MAX_QUEUE, 503 "server busy") still holds: a batcher takes at most
    max_members() members, and none while it waits for its runner if queue_full() (the scheduler's
    queue of waiting leases is full).
    """

    def __init__(self, max_members: Callable[[], int] = lambda: 512, queue_full: Callable[[], bool] = lambda: False):
        self.max_members = max_members
        self.queue_full = queue_full
        self._lock = threading.Lock()
        self._batchers: dict[tuple, Batcher] = {}
        self._closed = False

    def open(self, key: tuple, acquire: Acquire, *, truncate: bool, keep_alive: object, budget: int) -> Member:
        """A new member of the batcher for `key` (created on demand). acquire(keep_alive, cancel) must
        return a scheduler Lease on that runner; keep_alive is the scheduler's argument ("default",
        seconds, or None for forever). Raises Unavailable when the batcher has max_members already."""
        with self._lock:
            if self._closed:
                raise Unavailable(SHUTDOWN)
            batcher = self._batchers.get(key)
            if batcher is None:
                batcher = self._batchers[key] = Batcher(self, key, budget)
            return batcher._open(acquire, truncate, keep_alive)

    def _exit(self, batcher: Batcher, force: bool = False) -> bool:
        """Called by an idle lane: ends the batcher unless a member arrived meanwhile (or force)."""
        with self._lock, batcher._cond:
            if not force and (batcher._members or batcher._lease is not None or batcher._acquiring):
                return False
            batcher._exited = True
            batcher._cond.notify_all()
            if self._batchers.get(batcher.key) is batcher:
                del self._batchers[batcher.key]
            return True

    def stats(self) -> dict[tuple, dict]:
        with self._lock:
            batchers = dict(self._batchers)
        return {key: b.stats() for key, b in batchers.items()}

    def close(self) -> None:
        with self._lock:
            self._closed = True
            batchers = list(self._batchers.values())
            self._batchers.clear()
        for batcher in batchers:
            batcher.close()


def _fresh(exc: BaseException) -> BaseException:
    """A copy of a domain error for each member that raises it (one exception object raised in several
    threads would share one traceback)."""
    if isinstance(exc, CorralError):
        copy = exc.__class__(exc.message)
        copy.__cause__ = exc.__cause__
        return copy
    return exc
