"""Scheduler rules with a counting loader: on-demand loads, keep_alive, LRU eviction, parallel slots, the
bounded queue and its 503 text, reloads on changed load options, and dead runners.

Why a stand-in runner here: the scheduler's contract is about *when* runners are created and closed,
which a loader that counts calls shows exactly and quickly (the brief passes the loader in for this);
the real runner is exercised in test_runner.py and the e2e tests.
"""

import threading
import time

import pytest

from corral.service.engine.scheduler import BUSY, Scheduler
from corral.store.errors import Cancelled, Unavailable


class CountingRunner:
    def __init__(self, key, options):
        self.key, self.options = key, options
        self.alive = True
        self.closed = threading.Event()

    def close(self):
        self.alive = False
        self.closed.set()


class Loader:
    def __init__(self, delay=0.0, fail=None):
        self.calls = []
        self.delay = delay
        self.fail = fail

    def __call__(self, key, options, meta):
        self.calls.append(key)
        time.sleep(self.delay)
        if self.fail:
            raise self.fail
        return CountingRunner(key, options)


def meta(name):
    return {"name": name, "digest": "d" * 64, "details": {}}


@pytest.fixture
def make():
    made = []

    def factory(loader=None, **kw):
        s = Scheduler(loader or Loader(), **kw)
        made.append(s)
        return s

    yield factory
    for s in made:
        s.close()


def test_loads_once_and_shares(make):
    loader = Loader(delay=0.2)
    s = make(loader, num_parallel=4)
    leases = []
    threads = [threading.Thread(target=lambda: leases.append(s.acquire("a", {}, meta("a")))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert loader.calls == ["a"]
    assert sum(1 for lease in leases if lease.load_seconds > 0) == 1
    assert len({id(lease.runner) for lease in leases}) == 1
    for lease in leases:
        lease.release()
    assert [r["name"] for r in s.running()] == ["a"]


def test_keep_alive_expiry_and_zero(make):
    s = make()
    with s.acquire("a", {}, meta("a"), keep_alive=0.3) as lease:
        runner = lease.runner
        assert s.running()[0]["expires_at"] > time.time()
    assert [r["name"] for r in s.running()] == ["a"]
    assert runner.closed.wait(3)
    assert s.running() == []
    with s.acquire("b", {}, meta("b"), keep_alive=0) as lease:
        assert [r["name"] for r in s.running()] == ["b"]
    assert s.running() == []
    assert lease.runner.closed.wait(3)


def test_forever_and_latest_keep_alive_wins(make):
    s = make(default_keep_alive=300)
    with s.acquire("a", {}, meta("a"), keep_alive=None):
        pass
    assert s.running()[0]["expires_at"] > time.time() + 100 * 365 * 86400
    with s.acquire("a", {}, meta("a")):  # "default": back to the server default
        pass
    assert s.running()[0]["expires_at"] == pytest.approx(time.time() + 300, abs=5)


def test_lru_eviction(make):
    loader = Loader()
    s = make(loader, max_loaded=2)
    for name in ("a", "b", "a"):
        s.acquire(name, {}, meta(name)).release()
    s.acquire("c", {}, meta("c")).release()  # b is least recently used
    assert sorted(r["name"] for r in s.running()) == ["a", "c"]
    assert loader.calls == ["a", "b", "c"]


def test_memory_budget_evicts(make):
    s = make(max_loaded=10, memory_budget=100)
    s.acquire("a", {}, meta("a"), size=60).release()
    s.acquire("b", {}, meta("b"), size=60).release()
    assert [r["name"] for r in s.running()] == ["b"]


def test_eviction_waits_for_busy_model(make):
    s = make(max_loaded=1)
    lease = s.acquire("a", {}, meta("a"))
    got = []
    t = threading.Thread(target=lambda: got.append(s.acquire("b", {}, meta("b"))))
    t.start()
    time.sleep(0.2)
    assert not got  # a is busy: b waits instead of evicting it
    lease.release()
    t.join(3)
    assert got and [r["name"] for r in s.running()] == ["b"]
    got[0].release()


def test_queue_full_is_503(make):
    s = make(num_parallel=1, max_queue=1)
    first = s.acquire("a", {}, meta("a"))
    waiting = threading.Thread(target=lambda: s.acquire("a", {}, meta("a")).release())
    waiting.start()
    deadline = time.time() + 3
    while s.pending < 1 and time.time() < deadline:
        time.sleep(0.01)
    with pytest.raises(Unavailable) as err:
        s.acquire("a", {}, meta("a"))
    assert err.value.message == BUSY == "server busy, please try again.  maximum pending requests exceeded"
    first.release()
    waiting.join(3)
    assert not waiting.is_alive()


def test_cancel_while_queued(make):
    s = make(num_parallel=1)
    first = s.acquire("a", {}, meta("a"))
    cancel = threading.Event()
    errors = []

    def wait():
        try:
            s.acquire("a", {}, meta("a"), cancel=cancel)
        except Cancelled as exc:
            errors.append(exc)

    t = threading.Thread(target=wait)
    t.start()
    cancel.set()
    t.join(3)
    assert errors and errors[0].message == "request canceled"
    first.release()
    assert s.pending == 0


def test_changed_load_options_reload(make):
    loader = Loader()
    s = make(loader)
    with s.acquire("a", {"num_ctx": 128}, meta("a")) as lease:
        old = lease.runner
    with s.acquire("a", {"num_ctx": 256}, meta("a")) as lease:
        assert lease.runner is not old
    assert old.closed.is_set() and loader.calls == ["a", "a"]
    assert s.running()[0]["options"] == {"num_ctx": 256}


def test_dead_runner_is_replaced(make):
    loader = Loader()
    s = make(loader)
    with s.acquire("a", {}, meta("a")) as lease:
        lease.runner.alive = False  # the child died mid-request
    assert s.running() == []
    with s.acquire("a", {}, meta("a")) as lease:
        assert lease.runner.alive
    assert loader.calls == ["a", "a"]


def test_unload_waits_for_in_flight(make):
    s = make()
    lease = s.acquire("a", {}, meta("a"))
    s.unload("a")
    assert [r["name"] for r in s.running()] == ["a"]
    lease.release()
    assert s.running() == [] and lease.runner.closed.wait(3)
    s.unload("missing")  # unloading what is not loaded is fine


def test_loader_error_leaves_nothing(make):
    s = make(Loader(fail=RuntimeError("boom")))
    with pytest.raises(RuntimeError):
        s.acquire("a", {}, meta("a"))
    assert s.running() == [] and s.loaded == {} and s.pending == 0


def test_ps_shows_the_latest_requests_name(make):
    """Names that share one model file share its runner; ps shows the name of the latest request."""
    s = make(num_parallel=2)
    with s.acquire("file", {}, {"name": "a:latest", "digest": "1" * 64, "details": {"family": "x"}}):
        pass
    with s.acquire("file", {}, {"name": "b:latest", "digest": "2" * 64, "details": {"family": "y"}}):
        (row,) = s.running()
        assert (row["name"], row["digest"], row["details"]) == ("b:latest", "2" * 64, {"family": "y"})
    with s.acquire("file", {}, meta("a:latest")):
        pass
    assert [r["name"] for r in s.running()] == ["a:latest"]
