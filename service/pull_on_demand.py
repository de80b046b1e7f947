"""CORRAL_PULL_ON_DEMAND: a replica that lacks a requested model pulls it from its registry first.

Why: behind a proxy that hashes on the model name (deploy/nginx/corral.conf), the replica a model's
requests land on changes when a replica dies, is restarted or is added. With the registry as the source of
truth, the replica that inherits a model fetches it itself, and the request that found it missing waits for
the pull and is then served as usual. `install` wraps the servicer's Show, Generate, Chat, Embed,
Embeddings and EmbedStream (the calls that resolve a model by name; EmbedStream names it in its first
message) so the engine and the store stay unaware of it.

Single flight: one pull per name at a time, on a thread of its own; concurrent requests for that name
wait for it (each until its own deadline or cancellation, which does not stop the pull for the others).
A name the registry does not have is answered as before (the handler's "model 'x' not found"); any other
pull failure (registry unreachable, unauthorized) is the request's error, so an operator sees the cause.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Callable, Iterator

from corral.service.api.status import cancel_event, handle_errors
from corral.store.errors import Cancelled, CorralError, NotFound
from corral.store.names import parse_name

log = logging.getLogger("corral.service")

METHODS = ("Show", "Generate", "Chat", "Embed", "Embeddings")

Pull = Callable[[str, bool, threading.Event], Iterator[dict]]


class _Flight:
    def __init__(self) -> None:
        self.done = threading.Event()
        self.error: BaseException | None = None


class PullOnDemand:
    """`ensure(name, context)`: returns once the store has `name` (pulling it if it lacked it)."""

    def __init__(self, store, pull: Pull, insecure: bool = False):
        self.store = store
        self.pull = pull
        self.insecure = insecure
        self.pulls = 0  # pulls started (the tests count them)
        self._flights: dict[str, _Flight] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()

    def has(self, name_text: str) -> bool:
        try:
            self.store.find(name_text)
        except NotFound:
            return False
        except CorralError:
            return True  # an invalid name: the handler answers with its own text
        return True

    def ensure(self, name_text: str, context) -> None:
        if not name_text or self.has(name_text):
            return
        name = parse_name(name_text)
        if not name.is_valid():
            return  # the handler answers with its own error for the name
        key = name.full.lower()
        with self._lock:
            flight = self._flights.get(key)
            if flight is None:
                flight = self._flights[key] = _Flight()
                self.pulls += 1
                threading.Thread(target=self._run, args=(key, name_text, flight), daemon=True,
                                 name=f"pull-on-demand {name.display}").start()
        cancel = cancel_event(context)
        while not flight.done.wait(0.05):
            if cancel.is_set():
                raise Cancelled("pull cancelled")
        error = flight.error
        if isinstance(error, NotFound):
            return  # not in the registry either: the handler says the model was not found
        if isinstance(error, CorralError):
            raise error.__class__(error.message)
        if error is not None:
            raise error

    def _run(self, key: str, name_text: str, flight: _Flight) -> None:
        log.info("pulling %s on demand", name_text)
        try:
            for _ in self.pull(name_text, self.insecure, self._stop):
                pass
            log.info("pulled %s on demand", name_text)
        except BaseException as exc:  # handed to every waiter
            log.warning("pull of %s on demand failed: %s", name_text, exc)
            flight.error = exc
        finally:
            with self._lock:
                self._flights.pop(key, None)
            flight.done.set()

    def close(self) -> None:
        """Stops the pulls in flight (their waiters get the cancellation)."""
        self._stop.set()

    @handle_errors
    def _ensure_call(self, request, context) -> None:
        self.ensure(request.model, context)

    def wrap(self, method):
        def call(request, context):
            self._ensure_call(request, context)
            return method(request, context)

        call.__name__ = getattr(method, "__name__", "call")
        return call

    def wrap_stream(self, method):
        """For a request stream that names its model in the first message's config."""
        def call(requests, context):
            first = next(requests, None)
            if first is not None and first.HasField("config"):
                self._ensure_call(first.config, context)
            yield from method(itertools.chain(() if first is None else (first,), requests), context)

        call.__name__ = getattr(method, "__name__", "call")
        return call


def install(servicer, on_demand: PullOnDemand) -> None:
    """Wraps the servicer's model-resolving methods (before the servicer is added to a server)."""
    for method in METHODS:
        setattr(servicer, method, on_demand.wrap(getattr(servicer, method)))
    servicer.EmbedStream = on_demand.wrap_stream(servicer.EmbedStream)
    servicer.pull_on_demand = on_demand
