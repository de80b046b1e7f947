"""Fixtures for the fault tests: real `corral serve` processes to kill, a small tmpfs to fill, the real
docker-registry (tests/registry), and the store checker every test ends with.

Why real processes and a real filesystem: the faults are SIGKILL, a full disk and a second server on the
same store; none of them can be faked inside one Python process without testing the fake instead.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from corral.store import fsck
from tests.registry.conftest import _isolated_identity, proxy_factory, registry  # noqa: F401 (fixtures)


def assert_consistent(root: Path) -> fsck.Report:
    """The store at `root` passes the checker: manifests parse, blobs exist and hash, no temp files."""
    report = fsck.check(root)
    assert report.ok, report.text()
    return report


def children(pid: int) -> list[int]:
    """Every descendant of a process (runners, quantizers, the forkserver), from /proc."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents.setdefault(int(fields[1]), []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def start_all(*procs: CorralProcess) -> None:
    """Starts several servers at once (each start is mostly waiting for imports)."""
    threads = [threading.Thread(target=p.start) for p in procs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    assert all(p.url for p in procs), "a server did not start"


class CorralProcess:
    """`corral serve` in a subprocess on free ports, with its own HOME, over a given store."""

    def __init__(self, root: Path, home: Path, env: dict | None = None):
        home.mkdir(parents=True, exist_ok=True)
        self.env = dict(os.environ, OLLAMA_MODELS=str(root), HOME=str(home), **(env or {}))
        self.proc: subprocess.Popen | None = None
        self.url = ""
        self.log: list[str] = []

    def start(self) -> CorralProcess:
        exe = os.path.join(os.path.dirname(sys.executable), "corral")
        self.proc = subprocess.Popen([exe, "serve", "--grpc-address", "127.0.0.1:0", "--http-address",
                                      "127.0.0.1:0"], env=self.env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        found = threading.Event()

        def drain():
            for line in self.proc.stdout:
                self.log.append(line)
                match = re.search(r"listening on (http://127\.0\.0\.1:\d+)", line)
                if match:
                    self.url = match.group(1)
                    found.set()

        threading.Thread(target=drain, daemon=True).start()
        assert found.wait(60), "corral serve did not start:\n" + "".join(self.log)
        return self

    def kill(self) -> None:
        """SIGKILL, as a crash: the server and (as the OOM killer would) what it started."""
        if self.proc is None or self.proc.poll() is not None:
            return
        kids = children(self.proc.pid)
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        for pid in kids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.kill()

    def post(self, path: str, body: dict, **kw) -> requests.Response:
        return requests.post(self.url + path, json=body, timeout=kw.pop("timeout", 120), **kw)


@pytest.fixture
def corral_procs(tmp_path):
    """Starts `corral serve` processes; every one is stopped (and its children killed) at the end."""
    started: list[CorralProcess] = []

    def make(root: Path, name: str = "home", env: dict | None = None, start: bool = True) -> CorralProcess:
        proc = CorralProcess(root, tmp_path / name, env)
        started.append(proc)
        return proc.start() if start else proc

    yield make
    for proc in started:
        proc.kill()


@pytest.fixture
def tmpfs(tmp_path):
    """mount_small(size_kib) -> a fresh tmpfs of that size (root only); unmounted at the end."""
    mounted: list[Path] = []

    def mount_small(size_kib: int, name: str = "small") -> Path:
        target = tmp_path / name
        target.mkdir()
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kib}k", "tmpfs", str(target)],
                                capture_output=True, text=True)
        if result.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({result.stderr.strip() or 'mount failed'}): "
                        "the disk-full tests need root")
        mounted.append(target)
        return target

    yield mount_small
    for target in mounted:
        for _ in range(50):
            if subprocess.run(["umount", str(target)], capture_output=True).returncode == 0:
                break
            time.sleep(0.1)  # a runner or download thread may still hold a file open for a moment


def fill(directory: Path, leave: int = 0) -> Path:
    """Fills a filesystem up to `leave` free bytes (about; at block granularity) with a filler file."""
    path = directory / "filler"
    st = os.statvfs(directory)
    free = st.f_bavail * st.f_frsize
    with open(path, "wb") as f:
        try:
            f.write(b"\0" * max(0, free - leave))
            f.flush()
        except OSError:
            pass
    return path
