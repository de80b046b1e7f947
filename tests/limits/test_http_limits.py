"""The REST listener's limits, over raw sockets: a burst of connections (listen backlog), the size of a
request head, malformed chunked bodies, bodies that end early, and bodies the app leaves unread.

Why: each was a way for one client to get a 500, a reset or a stuck server (issue 13): cheroot's backlog
of 5 dropped a burst of 64 clients, a bad chunk size drew a 500 with a traceback, and a body a route did
not read (a 404, a 401) was read whole into memory before the answer. Every answer here is a JSON error
with a 4xx, and the server answers the next request.
"""

import threading
import time
from pathlib import Path

import pytest

from tests.limits.rawhttp import chunked, closed_by_server, connect, exchange, get, post, read_reply

SHOW_NOPE = b'{"model": "nope"}'


def healthy(port: int) -> None:
    reply = exchange(port, get("/api/version", "Connection: close\r\n"))
    assert reply.status == 200 and "version" in reply.json()


# -- listen backlog --------------------------------------------------------------------------------------


def test_a_burst_of_clients_connecting_at_once_all_get_answers(make_shim):
    clients = 128
    shim = make_shim(threads=clients)
    assert shim.server.request_queue_size == min(1024, int(Path("/proc/sys/net/core/somaxconn").read_text()))
    healthy(shim.port)  # the version is fetched once over gRPC
    barrier, results = threading.Barrier(clients), []

    def one():
        barrier.wait()
        start = time.monotonic()
        try:
            reply = exchange(shim.port, get("/api/version", "Connection: close\r\n"), timeout=5)
            results.append((reply.status, time.monotonic() - start))
        except OSError as exc:
            results.append((repr(exc), time.monotonic() - start))

    threads = [threading.Thread(target=one) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(15)
    # With a backlog of 5, a fifth of them timed out (5 s) and most waited for SYN retransmissions (1 s, 3 s).
    assert sorted(status for status, _ in results) == [200] * clients
    assert max(seconds for _, seconds in results) < 2.5


# -- the request head ------------------------------------------------------------------------------------


def head_of(size: int) -> bytes:
    """A GET /api/version whose request line and headers are exactly `size` bytes."""
    start = b"GET /api/version HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: "
    end = b"\r\n\r\n"
    return start + b"a" * (size - len(start) - len(end)) + end


def test_head_size_at_the_limit_and_past_it(make_shim):
    shim = make_shim(CORRAL_MAX_HEADER_BYTES="4096")
    assert len(head_of(4096)) == 4096
    assert exchange(shim.port, head_of(4096)).status == 200
    reply = exchange(shim.port, head_of(4097))
    assert reply.status == 431 and reply.closes
    assert reply.json() == {"error": "request headers too large (the limit is 4096 bytes; CORRAL_MAX_HEADER_BYTES)"}
    line = b"GET /api/version?" + b"q" * 5000 + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    reply = exchange(shim.port, line)
    assert reply.status == 414 and "request line too long" in reply.json()["error"]
    healthy(shim.port)


def test_default_head_limit_is_64_kib(make_shim):
    shim = make_shim()
    assert exchange(shim.port, head_of(64 * 1024)).status == 200  # larger than a parked request: a worker reads it
    assert exchange(shim.port, head_of(64 * 1024 + 1)).status == 431


# -- chunked bodies --------------------------------------------------------------------------------------


def test_a_valid_chunked_body_with_extensions_and_trailers_is_read(make_shim):
    shim = make_shim()
    body = b"5;name=value\r\n" + SHOW_NOPE[:5] + b"\r\n" + f"{len(SHOW_NOPE) - 5:x}".encode() + b"\r\n" \
        + SHOW_NOPE[5:] + b"\r\n0\r\nX-Trailer: yes\r\n\r\n"
    with connect(shim.port) as sock:
        sock.sendall(chunked("/api/show", body))
        reply = read_reply(sock)
        assert (reply.status, reply.json()) == (404, {"error": "model 'nope' not found"})
        sock.sendall(get("/api/version"))  # the connection stays usable: the body was read to its end
        assert read_reply(sock).status == 200


@pytest.mark.parametrize("raw_body,status,text", [
    (b"zz\r\n" + SHOW_NOPE + b"\r\n0\r\n\r\n", 400, "malformed chunked request body: invalid chunk size 'zz'"),
    (b"0x11\r\n" + SHOW_NOPE + b"\r\n0\r\n\r\n", 400, "malformed chunked request body: invalid chunk size '0x11'"),
    (b"-5\r\nabcde\r\n0\r\n\r\n", 400, "malformed chunked request body: invalid chunk size '-5'"),
    (b"1_1\r\n" + SHOW_NOPE + b"\r\n0\r\n\r\n", 400, "malformed chunked request body: invalid chunk size '1_1'"),
    (b"11\r\n" + SHOW_NOPE + b"XY0\r\n\r\n", 400, "malformed chunked request body: a chunk does not end with CRLF"),
    (b"5;" + b"e" * 5000 + b"\r\nabcde\r\n0\r\n\r\n", 400,
     "malformed chunked request body: chunk size line longer than 4096 bytes"),
    (b"11\r\n" + SHOW_NOPE + b"\r\n0\r\n" + b"X: y\r\n" * 65 + b"\r\n", 400,
     "malformed chunked request body: more than 64 trailers"),
    (b"1000000\r\n{", 413, "http: request body too large (the limit is 1048576 bytes)"),
    (b"11\r\n" + SHOW_NOPE[:8], 400, "unexpected EOF in a chunked request body"),  # truncated, then closed
    (b"11\r\n" + SHOW_NOPE, 400, "unexpected EOF in a chunked request body"),  # the last chunk never comes
])
def test_a_malformed_chunked_body_is_a_clean_4xx(make_shim, raw_body, status, text):
    shim = make_shim(CORRAL_MAX_BODY_BYTES=str(1 << 20))
    reply = exchange(shim.port, chunked("/api/show", raw_body), half_close=True)
    assert (reply.status, reply.json()) == (status, {"error": text})
    assert reply.closes
    healthy(shim.port)


def test_chunked_size_at_the_body_limit_and_past_it(make_shim):
    shim = make_shim(CORRAL_MAX_BODY_BYTES="1024")
    at = b'{"model": "nope", "x": "' + b"a" * (1024 - 26) + b'"}'
    assert len(at) == 1024
    body = f"{len(at):x}\r\n".encode() + at + b"\r\n0\r\n\r\n"
    assert exchange(shim.port, chunked("/api/show", body)).status == 404
    past = at[:-2] + b'a"}'
    body = f"{len(past):x}\r\n".encode() + past + b"\r\n0\r\n\r\n"
    reply = exchange(shim.port, chunked("/api/show", body))
    assert (reply.status, reply.json()) == (413, {"error": "http: request body too large (the limit is 1024 bytes)"})


def test_a_malformed_chunked_blob_upload_is_a_400_not_a_500(make_shim):
    shim = make_shim()
    raw = b"4\r\nabcd\r\nzz\r\n"
    reply = exchange(shim.port, chunked("/api/blobs/sha256:" + "c" * 64, raw), half_close=True)
    assert (reply.status, reply.json()) == (400, {"error": "malformed chunked request body: invalid chunk size 'zz'"})
    healthy(shim.port)


# -- Content-Length bodies -------------------------------------------------------------------------------


def test_a_body_shorter_than_its_content_length_is_a_400(make_shim):
    shim = make_shim()
    data = post("/api/show", SHOW_NOPE)
    reply = exchange(shim.port, data.replace(b"Content-Length: 17", b"Content-Length: 40"), half_close=True)
    assert (reply.status, reply.json()) == (
        400, {"error": "unexpected EOF: the request body ended before its Content-Length"})
    healthy(shim.port)


@pytest.mark.parametrize("value", ["-5", "abc", "+17", "1 7"])
def test_an_invalid_content_length_is_a_400(make_shim, value):
    shim = make_shim()
    data = post("/api/show", SHOW_NOPE).replace(b"Content-Length: 17", f"Content-Length: {value}".encode())
    reply = exchange(shim.port, data)
    assert reply.status == 400 and reply.closes and reply.json()["error"]


def test_a_large_unread_body_is_not_read_before_the_answer(make_shim):
    """A 404 for a POST that declares 10 GB: answered at once and closed (cheroot read the whole body into
    memory first); a small unread body is read and dropped, and the connection serves the next request."""
    shim = make_shim()
    with connect(shim.port) as sock:
        sock.sendall(b"POST /api/nothing-here HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 10000000000\r\n\r\n"
                     + b"x" * 1000)
        start = time.monotonic()
        reply = read_reply(sock, timeout=5)
        assert reply.status == 404 and reply.closes and time.monotonic() - start < 2
        assert closed_by_server(sock)
    with connect(shim.port) as sock:
        sock.sendall(post("/api/nothing-here", b"y" * 100_000))
        assert read_reply(sock).status == 404
        sock.sendall(get("/api/version"))
        assert read_reply(sock).status == 200
