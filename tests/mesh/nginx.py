"""Debian's nginx run by a test (or a bench) with the shipped deploy/nginx/corral.conf: the same directives,
only the listen port and the upstream servers' ports substituted; plus nginx's consistent-hash ring
computed here, so a test can say which replica `hash $http_x_ollama_model consistent` picks."""

from __future__ import annotations

import bisect
import re
import shutil
import socket
import struct
import subprocess
import time
import zlib
from pathlib import Path

SHIPPED = Path(__file__).resolve().parents[2] / "deploy" / "nginx" / "corral.conf"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def render(listen_port: int, replica_ports: list[int], text: str | None = None, keepalive: int = 0,
           down: frozenset[int] = frozenset()) -> str:
    """The shipped config with our ports: one upstream `server` line per replica (with the shipped line's
    parameters), the listen port replaced. Nothing else changes (`keepalive`: the benchmark's variant with
    kept-open upstream connections)."""
    text = text if text is not None else SHIPPED.read_text()
    servers = list(re.finditer(r"^(\s*)server 127\.0\.0\.1:\d+( [^;]*)?;\n", text, re.M))
    assert servers, "the shipped config lists no upstream servers"
    indent, params = servers[0].group(1), servers[0].group(2) or ""
    lines = "".join(f"{indent}server 127.0.0.1:{p}{params}{' down' if p in down else ''};\n" for p in replica_ports)
    if keepalive < 0:  # the benchmark's variant without kept-open upstream connections
        text = re.sub(r"\n\s*keepalive \d+;", "", text)
    elif keepalive:
        text = re.sub(r"keepalive \d+;", f"keepalive {keepalive};", text)
    text = text[: servers[0].start()] + lines + text[servers[-1].end():]
    text, n = re.subn(r"listen 127\.0\.0\.1:\d+", f"listen 127.0.0.1:{listen_port}", text)
    assert n == 1
    return text


def ring(servers: list[str]) -> list[tuple[int, str]]:
    """nginx's ketama points (ngx_http_upstream_init_chash): 160 per server of weight 1, each
    crc32(HOST \\0 PORT PREV_HASH), sorted, duplicates dropped."""
    points: list[tuple[int, str]] = []
    for server in servers:
        host, _, port = server.rpartition(":")
        base = host.encode() + b"\0" + port.encode()
        prev = 0
        for _ in range(160):
            prev = zlib.crc32(base + struct.pack("<I", prev))
            points.append((prev, server))
    points.sort(key=lambda p: p[0])
    unique: list[tuple[int, str]] = []
    for point in points:
        if not unique or unique[-1][0] != point[0]:
            unique.append(point)
    return unique


def pick(key: str, servers: list[str], down: tuple[str, ...] = ()) -> str:
    """The server nginx's consistent hash sends `key` to, skipping servers marked down."""
    points = ring(servers)
    hashes = [p[0] for p in points]
    i = bisect.bisect_left(hashes, zlib.crc32(key.encode()))
    for step in range(len(points)):
        server = points[(i + step) % len(points)][1]
        if server not in down:
            return server
    raise AssertionError("every server is down")


class Nginx:
    def __init__(self, folder: Path, replica_ports: list[int], keepalive: int = 0, access_log: bool = True,
                 extra: str = ""):
        self.folder = folder
        self.access_log, self.extra = access_log, extra
        self.keepalive = keepalive
        self.port = free_port()
        self.replica_ports = replica_ports
        self.proc: subprocess.Popen | None = None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def servers(self) -> list[str]:
        return [f"127.0.0.1:{p}" for p in self.replica_ports]

    def start(self) -> Nginx:
        exe = shutil.which("nginx") or "/usr/sbin/nginx"
        if not Path(exe).exists():
            raise AssertionError("nginx is not installed: apt-get install -y nginx-light (make system-deps)")
        f = self.folder
        (f / "temp").mkdir(parents=True, exist_ok=True)
        (f / "corral.conf").write_text(render(self.port, self.replica_ports, keepalive=self.keepalive))
        self.args = [exe, "-p", str(f), "-c", str(f / "nginx.conf"), "-e", str(f / "error.log")]
        (f / "nginx.conf").write_text(
            f"daemon off;\nworker_processes 1;\npid {f}/nginx.pid;\nerror_log {f}/error.log notice;\n"
            "events { worker_connections 1024; }\n"
            "http {\n  log_format corral '$msec $status $request_time $upstream_addr $upstream_status '\n"
            "    'grpc=$upstream_http_grpc_status/$upstream_trailer_grpc_status $http_x_ollama_model';\n"
            + (f"  access_log {f}/access.log corral buffer=32k flush=1s;\n" if self.access_log else "  access_log off;\n")
            + f"{self.extra}  client_body_temp_path {f}/temp/body;\n"
            f"  proxy_temp_path {f}/temp/proxy;\n  include {f}/corral.conf;\n}}\n")
        args = [exe, "-p", str(f), "-c", str(f / "nginx.conf"), "-e", str(f / "error.log")]
        subprocess.run([*args, "-t", "-q"], check=True, capture_output=True)
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return self
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise AssertionError("nginx did not start:\n" + self.error_log())

    def set_down(self, *ports: int) -> None:
        """Marks replicas `down` (or none) and reloads, as an operator takes one out before restarting it;
        returns once the old worker has exited (it finishes its requests, still routed by the old config)."""
        (self.folder / "corral.conf").write_text(
            render(self.port, self.replica_ports, keepalive=self.keepalive, down=frozenset(ports)))
        exits = re.compile(r"^\S+ \S+ \[notice\] \d+#\d+: exit$", re.M)
        before = len(exits.findall(self.error_log()))
        subprocess.run([*self.args, "-s", "reload"], check=True, capture_output=True)
        deadline = time.monotonic() + 20
        while len(exits.findall(self.error_log())) <= before and time.monotonic() < deadline:
            time.sleep(0.02)

    def error_log(self) -> str:
        path = self.folder / "error.log"
        return path.read_text() if path.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
