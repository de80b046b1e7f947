"""Reading requests from clients that may be slow or malformed, for the cheroot server of rest_shim/http.py.

Why: cheroot gives every connection a worker thread from the moment it is accepted, reads the request
line, headers and body in that thread with one timeout per recv (10 s), and decodes chunked bodies
trusting the client (a size line of any length, a chunk of any declared size read in one piece, a bad
size surfacing as a ValueError, hence a 500). So a client that dribbles its request, one byte every few
seconds, holds a thread for as long as it likes, and a few hundred of them stop the server. Here:

- A request's head (and its body, when the whole request is small) waits in the server's selector, not
  in a thread: the selector's thread takes what has arrived without blocking (`take_available`, kept
  for the worker's reads) and `waiting()` tells whether the request is whole; a worker gets the
  connection only then. One that has not arrived within the read timeout gets 408 and is closed without
  ever taking a thread. (Bytes are taken, not peeked: a socket with unread bytes stays readable, and the
  selector would spin on it.)
- Every read in a worker counts the time it waits for the client (ReadClock): past the read timeout
  (CORRAL_REQUEST_READ_TIMEOUT) the request gets 408. Only waiting counts, so a server that reads slowly
  (an upload waiting for its slot) never times a client out, and a body that keeps arriving at the
  minimum rate (CORRAL_REQUEST_MIN_RATE) starts a new window each time it has sent a window's worth: a
  many-GiB blob upload that moves is never cut, one that trickles is.
- Bodies are read through ChunkedBody (a strict decoder: bounded size lines, hex sizes only, chunks read
  in pieces, CRLF checked, trailers consumed) or KnownLengthBody (an early end is an error, not a short
  body). A failed read records its answer (`failure`: 400, 408 or 413 with a JSON error text), which the
  body readers (rest_shim/body.py) and the server's last-resort wrapper (http.py) send, and the
  connection is closed after it since its stream can no longer be trusted.
"""

from __future__ import annotations

import _pyio
import re
import socket
import time

from cheroot import server as cheroot_server
from cheroot.makefile import StreamReader

PARK_BYTES = 32 * 1024  # a request this small (head and body) is waited for in the selector, not a thread
# Kept well inside the receive window a Linux socket advertises before the application reads (~64 KiB):
# larger, a client could be blocked by flow control from sending the rest while the server waits for it.
MAX_CHUNK_LINE = 4096  # a chunk-size line with its extensions
MAX_TRAILER_LINES = 64
_PIECE = 64 * 1024  # a chunk is read in pieces of at most this, whatever size it declares

_HEAD_END = re.compile(rb"\r?\n\r?\n")
_CONTENT_LENGTH = re.compile(rb"\ncontent-length[ \t]*:[ \t]*([0-9]{1,15})[ \t]*\r?\n", re.IGNORECASE)
_NOT_PARKED = re.compile(rb"\n(?:transfer-encoding|expect)[ \t]*:", re.IGNORECASE)
_HEX_SIZE = re.compile(rb"[0-9a-fA-F]{1,16}")


def timeout_text(seconds: float, rate: int) -> str:
    """The 408 text: the limits a client sending too slowly ran into."""
    return (f"timed out reading the request: the client sent it too slowly (CORRAL_REQUEST_READ_TIMEOUT={seconds:g}s, "
            f"CORRAL_REQUEST_MIN_RATE={rate} bytes/s)")


class BodyError(ValueError):
    """A request body that cannot be read: its HTTP status and Ollama-style error text."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


# -- waiting in the selector -----------------------------------------------------------------------------

def _needed(head: bytes) -> int:
    """How many bytes the request whose head is `head` has in all, when it is worth waiting for in the
    selector; 0 when not: chunked, expecting 100-continue, or a body that makes it larger than PARK_BYTES."""
    if _NOT_PARKED.search(head):
        return 0
    length = _CONTENT_LENGTH.search(head)
    total = len(head) + (int(length.group(1)) if length else 0)
    return total if total <= PARK_BYTES else 0


# -- timing reads in a worker ------------------------------------------------------------------------

class ReadClock:
    """The time a worker waited for one request's bytes, in windows of `timeout` seconds; a window that
    brought timeout x min_rate bytes (min_rate > 0) starts a new one."""

    def __init__(self, timeout: float, min_rate: int):
        self.timeout, self.min_rate = timeout, min_rate
        self.reset()

    def reset(self, waited: float = 0.0) -> None:
        self.waited, self.window_bytes, self.expired = waited, 0, False

    def remaining(self) -> float:
        return self.timeout - self.waited

    def record(self, seconds: float, nbytes: int) -> None:
        self.waited += seconds
        self.window_bytes += nbytes
        if self.min_rate and self.window_bytes >= self.min_rate * self.timeout:
            self.waited, self.window_bytes = 0.0, 0


class TimedSocketIO(socket.SocketIO):
    """socket.SocketIO whose reads wait at most the clock's remaining time (the socket's own timeout
    still bounds each one); a read past it raises TimeoutError("timed out"), which cheroot answers 408
    while reading a head. `pending`: bytes the selector's thread took (take_available), read first."""

    def __init__(self, sock: socket.socket, clock: ReadClock):
        super().__init__(sock, "rb")
        self.sock, self.clock = sock, clock
        self.pending = bytearray()
        self.incomplete = False  # pending is the start of a request still arriving: the selector waits for it
        self._scanned = 0  # bytes of pending searched for the end of the head, in vain
        self._needed: int | None = None  # once the head is here: the request's size (0: not worth waiting)

    def waiting(self) -> bool:
        """True while `pending` is the start of a request that fits in PARK_BYTES and has not fully
        arrived: no end of head yet, or a Content-Length body still short. False (hand it to a worker)
        once it has, or when it is too large, chunked, or expects 100-continue. Each byte is searched
        once, however slowly they come."""
        data = self.pending
        if self._needed is None:
            match = _HEAD_END.search(data, max(0, self._scanned - 3))
            if match is None:
                self._scanned = len(data)
                return len(data) < PARK_BYTES
            self._needed = _needed(bytes(data[: match.end()]))
        return len(data) < self._needed

    def take_available(self, limit: int) -> int | None:
        """Moves what has arrived into `pending` without blocking, until `pending` holds `limit` bytes:
        the count taken, 0 at the end of the stream, None when nothing had arrived. OSError: reset."""
        sock, room = self.sock, limit - len(self.pending)
        if room <= 0:
            return None
        normal = sock.gettimeout()
        sock.settimeout(0.0)
        try:
            data = sock.recv(room)
        except BlockingIOError:
            return None
        finally:
            sock.settimeout(normal)
        self.pending += data
        return len(data)

    def readinto(self, b) -> int | None:  # type: ignore[override]
        if self.pending:
            n = min(len(b), len(self.pending))
            b[:n] = self.pending[:n]
            del self.pending[:n]
            self._scanned, self._needed = 0, None  # a worker reads the request: what is left is the next one
            return n
        clock, sock = self.clock, self.sock
        left = clock.remaining()
        if left <= 0:
            clock.expired = True
            raise TimeoutError("timed out")
        normal = sock.gettimeout()
        tighter = normal is None or left < normal
        if tighter:
            sock.settimeout(left)
        start = time.monotonic()
        try:
            got = super().readinto(b)
        except TimeoutError:
            clock.expired = True  # the clock's deadline or the per-recv timeout: the client is too slow
            raise
        finally:
            if tighter:
                sock.settimeout(normal)  # writes keep the socket's own timeout
        clock.record(time.monotonic() - start, got or 0)
        return got


class DeadlineReader(StreamReader):
    """A connection's rfile (cheroot's StreamReader) reading through TimedSocketIO."""

    def __init__(self, sock: socket.socket, bufsize: int, clock: ReadClock):
        self.timed = TimedSocketIO(sock, clock)
        _pyio.BufferedReader.__init__(self, self.timed, bufsize)
        self.bytes_read = 0
        self.clock = clock

    def buffered(self) -> bool:
        """True when the reader's own buffer holds bytes (cheroot's has_data)."""
        return super().has_data()

    def has_data(self) -> bool:
        """Bytes a worker can use without waiting for the socket: cheroot hands such a connection straight
        to a worker instead of waiting for it to become readable (which taken bytes never make it); not
        the start of a request still arriving, which waits in the selector."""
        return super().has_data() or (bool(self.timed.pending) and not self.timed.incomplete)


# -- request bodies ----------------------------------------------------------------------------------

def _failure(exc: BaseException, clock: ReadClock | None) -> tuple[int, str]:
    if isinstance(exc, BodyError):
        return exc.status, exc.message
    if clock is not None and (clock.expired or isinstance(exc, TimeoutError)):
        return 408, timeout_text(clock.timeout, clock.min_rate)
    if isinstance(exc, TimeoutError):
        return 408, "timed out reading the request"
    return 400, f"error reading the request body: {exc}"


class _Noting:
    """What the first failed read of a body was: `failure` (status, text), None while reads succeed."""

    failure: tuple[int, str] | None = None
    clock: ReadClock | None = None

    def _note(self, exc: BaseException) -> None:
        if self.failure is None:
            self.failure = _failure(exc, self.clock)


class KnownLengthBody(_Noting, cheroot_server.KnownLengthRFile):
    """A Content-Length body whose early end is an error (cheroot returns a short body)."""

    def __init__(self, rfile, content_length: int):
        super().__init__(rfile, content_length)
        self.clock = getattr(rfile, "clock", None)

    def _checked(self, method, size, whole: bool):
        """`method`'s data; an error when the connection ended first: `whole` (read) wants every byte
        asked for (a buffered read is short only at the end), a readline at least one."""
        if size is not None and size < 0:
            size = None  # read(-1) would read past the body, to the end of the connection
        wanted = self.remaining if size is None else min(size, self.remaining)
        try:
            data = method(size)
        except Exception as exc:
            self._note(exc)
            raise
        if len(data) < (wanted if whole else min(wanted, 1)):
            error = BodyError(400, "unexpected EOF: the request body ended before its Content-Length")
            self._note(error)
            raise error
        return data

    def read(self, size=None):
        return self._checked(super().read, size, True)

    def readline(self, size=None):
        return self._checked(super().readline, size, False)


class ChunkedBody(_Noting, cheroot_server.ChunkedRFile):
    """A strict decoder of Transfer-Encoding: chunked. `limit` (0: none), when a reader sets it, refuses a
    chunk whose declared size alone passes it with 413 before any of it is read."""

    def __init__(self, rfile):
        super().__init__(rfile, 0, bufsize=_PIECE)
        self.clock = getattr(rfile, "clock", None)
        self.limit = 0
        self._left = 0  # bytes of the current chunk not read yet

    def _fetch(self):
        if self.closed:
            return
        try:
            self._fetch_piece()
        except Exception as exc:
            self._note(exc)
            raise

    def _line(self, what: str) -> bytes:
        line = self.rfile.readline(MAX_CHUNK_LINE + 1)
        if not line.endswith(b"\n"):
            if len(line) > MAX_CHUNK_LINE:
                raise BodyError(400, f"malformed chunked request body: {what} longer than {MAX_CHUNK_LINE} bytes")
            raise BodyError(400, "unexpected EOF in a chunked request body")
        return line

    def _fetch_piece(self) -> None:
        if not self._left:
            text = self._line("chunk size line").split(b";", 1)[0].strip()
            if not _HEX_SIZE.fullmatch(text):
                shown = text[:32].decode("latin-1")
                raise BodyError(400, f"malformed chunked request body: invalid chunk size {shown!r}")
            size = int(text, 16)
            if size == 0:
                self._trailers()
                self.closed = True
                return
            if self.limit and self.bytes_read + size > self.limit:
                raise BodyError(413, f"http: request body too large (the limit is {self.limit} bytes)")
            self._left = size
        piece = self.rfile.read(min(self._left, _PIECE))
        if not piece:
            raise BodyError(400, "unexpected EOF in a chunked request body")
        self._left -= len(piece)
        self.bytes_read += len(piece)
        self.buffer += piece
        if not self._left:
            end = self.rfile.read(2)
            if end != b"\r\n":
                raise BodyError(400, "unexpected EOF in a chunked request body" if len(end) < 2
                                else "malformed chunked request body: a chunk does not end with CRLF")

    def _trailers(self) -> None:
        for count in range(MAX_TRAILER_LINES + 1):
            line = self.rfile.readline(MAX_CHUNK_LINE + 1)
            if not line or line in (b"\r\n", b"\n"):
                return  # the end (a client that closes after the last chunk is forgiven its empty line)
            if not line.endswith(b"\n"):
                raise BodyError(400, f"malformed chunked request body: trailer longer than {MAX_CHUNK_LINE} bytes")
            if count == MAX_TRAILER_LINES:
                break
        raise BodyError(400, f"malformed chunked request body: more than {MAX_TRAILER_LINES} trailers")


def body_failure(stream) -> tuple[int, str] | None:
    """The failure recorded by a request's body reader (its wsgi.input: status, text), None if its reads
    succeeded or it is no reader of ours."""
    return getattr(stream, "failure", None)


def limit_chunked(stream, limit: int) -> None:
    """A chunked body (wsgi.input) may declare at most `limit` bytes (413 at the first chunk past it)."""
    if isinstance(stream, ChunkedBody):
        stream.limit = limit
