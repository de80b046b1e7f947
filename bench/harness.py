"""Shared bench plumbing: run `corral serve` as a child process on free loopback ports, read its memory.

Benchmarks measure the real server the way a user runs it, in its own process, so RSS figures are the
server's own and not the benchmark's.
"""

import os
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import grpc


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    """VmRSS (now) or VmHWM (peak since start) of a process, in KiB, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


class Running:
    def __init__(self, proc, url, target, store):
        self.proc, self.url, self.target, self.store = proc, url, target, store

    def rss_mib(self) -> float:
        return rss_kib(self.proc.pid) / 1024

    def peak_mib(self) -> float:
        return rss_kib(self.proc.pid, "VmHWM") / 1024


@contextmanager
def corral_server(store: Path | None = None):
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP", "/var/tmp")) as tmp:
        store = store or Path(tmp) / "models"
        http, rpc = free_port(), free_port()
        env = dict(os.environ, OLLAMA_MODELS=str(store), OLLAMA_HOST=f"127.0.0.1:{http}", NO_PROXY="*")
        # The server's log goes to a file: a pipe nobody reads fills up (it logs a line per request) and
        # then blocks the server mid-benchmark.
        log = open(Path(tmp) / "server.log", "wb")  # noqa: SIM115 (closed below)
        proc = subprocess.Popen(
            [sys.executable, "-m", "corral.service.cli.main", "serve", "--grpc-address", f"127.0.0.1:{rpc}"],
            env=env, stdout=subprocess.DEVNULL, stderr=log,
        )
        try:
            channel = grpc.insecure_channel(f"127.0.0.1:{rpc}")
            grpc.channel_ready_future(channel).result(timeout=30)
            channel.close()
            deadline = time.time() + 30
            while time.time() < deadline:
                try:
                    socket.create_connection(("127.0.0.1", http), timeout=1).close()
                    break
                except OSError:
                    time.sleep(0.05)
            yield Running(proc, f"http://127.0.0.1:{http}", f"127.0.0.1:{rpc}", store)
        finally:
            proc.terminate()
            proc.wait(timeout=60)
            log.close()


def percentile(values, q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def p50_ms(call, n: int, warm: int = 20) -> float:
    """The median latency of `call` in milliseconds over n calls, after `warm` untimed ones (connections
    and caches warmed)."""
    for _ in range(warm):
        call()
    times = []
    for _ in range(n):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return percentile(times, 50) * 1000


def paired(call, kinds: list[str], rounds: int, requests: int, block: int = 20) -> dict[str, list[float]]:
    """Per round, each kind's p50 latency in ms, the kinds measured interleaved (`block` calls of each in
    turn) so that all of them see the same background load: on a shared 2-core machine, kinds measured
    one after the other compared different moments more than different paths. `call(kind)` makes one
    request of that kind; 20 untimed calls of each warm connections and caches first."""
    for kind in kinds:
        for _ in range(20):
            call(kind)
    out: dict[str, list[float]] = {k: [] for k in kinds}
    for _ in range(rounds):
        times: dict[str, list[float]] = {k: [] for k in kinds}
        for _ in range(max(1, requests // block)):
            for kind in kinds:
                for _ in range(block):
                    start = time.perf_counter()
                    call(kind)
                    times[kind].append(time.perf_counter() - start)
        for kind in kinds:
            out[kind].append(percentile(times[kind], 50) * 1000)
    return out
