"""Slow clients against a shim with few threads and a short read timeout (CORRAL_REQUEST_READ_TIMEOUT,
CORRAL_REQUEST_MIN_RATE): dribbled heads and small bodies wait in the selector without a thread, silent
connections too, so the server keeps answering everyone else at once; a large body that trickles below the
minimum rate gets 408; an upload that keeps moving at the minimum rate runs past the timeout many times.

Why: cheroot gives each connection a thread at accept and times each recv separately (10 s), so one byte
every few seconds held a thread for ever, and more such clients than threads stopped the server.
"""

import hashlib
import os
import threading
import time

import requests

from tests.limits.rawhttp import connect, exchange, get, read_reply, timed

TIMEOUT_TEXT = ("timed out reading the request: the client sent it too slowly (CORRAL_REQUEST_READ_TIMEOUT={}s, "
                "CORRAL_REQUEST_MIN_RATE={} bytes/s)")


def test_dribbling_clients_do_not_take_the_threads(make_shim):
    shim = make_shim(threads=2, CORRAL_REQUEST_READ_TIMEOUT="3")  # 2 + 8 spare workers in all
    assert exchange(shim.port, get("/api/version")).status == 200
    heads = [connect(shim.port) for _ in range(24)]
    for sock in heads:
        sock.sendall(b"GET /api/version HTTP/1.1\r\nX-Slow: ")
    bodies = [connect(shim.port) for _ in range(8)]
    for sock in bodies:  # a whole head, then a small body that never completes
        sock.sendall(b'POST /api/show HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 17\r\n\r\n{"mo')
    silent = [connect(shim.port) for _ in range(16)]
    try:
        start = time.monotonic()
        while time.monotonic() - start < 2.2:
            for sock in heads + bodies:
                sock.sendall(b"a")
            reply, seconds = timed(exchange, shim.port, get("/api/version", "Connection: close\r\n"))
            assert reply.status == 200 and seconds < 1.5  # without parking: until the dribblers time out
            time.sleep(0.3)
        time.sleep(3.2 - (time.monotonic() - start))
        for sock in heads + bodies:  # past the read timeout: the next byte is answered 408 and the end
            sock.sendall(b"a")
            reply = read_reply(sock)
            assert (reply.status, reply.json()) == (408, {"error": TIMEOUT_TEXT.format(3, 16384)}) and reply.closes
        assert exchange(shim.port, get("/api/version")).status == 200
    finally:
        for sock in heads + bodies + silent:
            sock.close()


def _dribble(sock, piece: bytes, interval: float, seconds: float) -> None:
    end = time.monotonic() + seconds
    try:
        while time.monotonic() < end:
            sock.sendall(piece)
            time.sleep(interval)
    except OSError:
        pass  # answered and closed


def test_a_large_body_below_the_minimum_rate_gets_408(make_shim):
    shim = make_shim(CORRAL_REQUEST_READ_TIMEOUT="1", CORRAL_REQUEST_MIN_RATE="65536")
    with connect(shim.port) as sock:  # larger than what waits in the selector: a worker reads it, timed
        sock.sendall(b"POST /api/show HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100000\r\n\r\n{")
        sender = threading.Thread(target=_dribble, args=(sock, b" " * 1024, 0.2, 8), daemon=True)
        start = time.monotonic()
        sender.start()
        reply = read_reply(sock, timeout=10)
        assert (reply.status, reply.json()) == (408, {"error": TIMEOUT_TEXT.format(1, 65536)}) and reply.closes
        assert time.monotonic() - start < 4
    assert exchange(shim.port, get("/api/version")).status == 200


def _chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def test_an_upload_at_the_minimum_rate_is_not_cut_and_a_slower_one_is(make_shim, server):
    shim = make_shim(CORRAL_REQUEST_READ_TIMEOUT="1", CORRAL_REQUEST_MIN_RATE="65536")
    data = os.urandom(24 * 32 * 1024)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()

    def moving():  # 256 KiB/s, four times the minimum, for three times the read timeout
        for start in range(0, len(data), 32 * 1024):
            yield data[start : start + 32 * 1024]
            time.sleep(0.125)

    began = time.monotonic()
    r = requests.post(f"{shim.url}/api/blobs/{digest}", data=moving(), timeout=30)
    assert r.status_code == 201 and time.monotonic() - began > 2.5
    assert requests.head(f"{shim.url}/api/blobs/{digest}", timeout=10).status_code == 200

    with connect(shim.port) as sock:  # 32 KiB/s: half the minimum
        sock.sendall(f"POST /api/blobs/sha256:{'d' * 64} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     "Transfer-Encoding: chunked\r\n\r\n".encode())
        sender = threading.Thread(target=_dribble, args=(sock, _chunk(b"z" * 8192), 0.25, 8), daemon=True)
        sender.start()
        reply = read_reply(sock, timeout=10)
        assert (reply.status, reply.json()) == (408, {"error": TIMEOUT_TEXT.format(1, 65536)})
    assert exchange(shim.port, get("/api/version")).status == 200
