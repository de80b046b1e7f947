"""Raw HTTP/1.1 over a socket: the limit tests send what no HTTP library would (dribbled heads, broken
chunked bodies, oversized headers) and read exactly what the server answers."""

from __future__ import annotations

import json
import socket
import time
from dataclasses import dataclass, field


@dataclass
class Reply:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    def json(self):
        return json.loads(self.body)

    @property
    def closes(self) -> bool:
        return self.headers.get("connection", "").lower() == "close"


def connect(port: int, timeout: float = 5.0) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def read_reply(sock: socket.socket, timeout: float = 5.0) -> Reply:
    """One response (Content-Length, chunked, or up to the close); raises on a timeout or a reset."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        part = sock.recv(65536)
        if not part:
            raise ConnectionError(f"closed before a full response head: {data[:200]!r}")
        data += part
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    reply = Reply(int(lines[0].split()[1]))
    for line in lines[1:]:
        key, _, value = line.partition(":")
        reply.headers[key.strip().lower()] = value.strip()
    if "content-length" in reply.headers:
        size = int(reply.headers["content-length"])
        while len(rest) < size:
            part = sock.recv(65536)
            if not part:
                break
            rest += part
        reply.body = rest[:size]
    elif reply.headers.get("transfer-encoding") == "chunked":
        while not rest.endswith(b"0\r\n\r\n"):
            part = sock.recv(65536)
            if not part:
                break
            rest += part
        body, pos = b"", 0
        while True:
            end = rest.index(b"\r\n", pos)
            size = int(rest[pos:end], 16)
            if size == 0:
                break
            body += rest[end + 2 : end + 2 + size]
            pos = end + 4 + size
        reply.body = body
    else:
        while part := sock.recv(65536):
            rest += part
        reply.body = rest
    return reply


def exchange(port: int, data: bytes, timeout: float = 5.0, half_close: bool = False) -> Reply:
    """Sends `data` on a new connection (then shuts down writing when `half_close`) and reads the reply."""
    with connect(port, timeout) as sock:
        sock.sendall(data)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        return read_reply(sock, timeout)


def closed_by_server(sock: socket.socket, timeout: float = 2.0) -> bool:
    """True when the server closes the connection within `timeout` (EOF or reset)."""
    sock.settimeout(timeout)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def get(path: str, extra: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}\r\n".encode()


def post(path: str, body: bytes, extra: str = "") -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n{extra}\r\n").encode() + body


def chunked(path: str, raw_body: bytes) -> bytes:
    """A POST whose body is sent as given after a Transfer-Encoding: chunked head."""
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            "Transfer-Encoding: chunked\r\n\r\n").encode() + raw_body


def timed(fn, *args, **kwargs):
    start = time.monotonic()
    result = fn(*args, **kwargs)
    return result, time.monotonic() - start
