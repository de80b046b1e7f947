"""A loopback HTTP proxy in front of the test registry that can throttle, corrupt or cut blob downloads.

Why: resume, stall and corruption cases need a registry that misbehaves in controlled ways, and the real
registry cannot be told to. The proxy forwards every request unchanged (keeping the client's Host, so the
registry's Location headers point back at the proxy) and, for blob GETs only, can limit the rate, flip a
byte, drop the connection after some bytes, or redirect them to another host (a CDN). It counts the
blob bytes it sent, which is how the tests tell a resumed download from a restarted one.
"""

from __future__ import annotations

import http.client
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

BLOB_GET = re.compile(r"^/v2/.+/blobs/sha256:[0-9a-f]{64}$")
HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-authorization",
       "proxy-authenticate"}


class Proxy:
    def __init__(self, upstream: str, rate: float | None = None, corrupt: bool = False,
                 cut_after: int | None = None, chunk: int = 64 * 1024, redirect: str | None = None):
        self.upstream, self.rate, self.corrupt = upstream, rate, corrupt
        self.cut_after, self.chunk, self.redirect = cut_after, chunk, redirect
        self.blob_bytes = 0
        self.blob_requests: list[str] = []
        self.methods: list[str] = []
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.httpd.server_address[1]}"

    def start(self) -> "Proxy":
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()

    def _handler(self):
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _forward(self):
                with proxy.lock:
                    proxy.methods.append(self.command)
                if proxy.redirect and self.command == "GET" and BLOB_GET.match(self.path):
                    self.send_response(307)  # like a registry that sends blobs from a CDN
                    self.send_header("Location", f"http://{proxy.redirect}{self.path}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP}
                conn = http.client.HTTPConnection(proxy.upstream, timeout=60)
                conn.request(self.command, self.path, body=body, headers=headers)
                reply = conn.getresponse()
                blob = (self.command == "GET" and reply.status in (200, 206)
                        and BLOB_GET.match(self.path.split("?")[0]) is not None)
                if blob:
                    with proxy.lock:
                        proxy.blob_requests.append(self.headers.get("Range", ""))
                self.send_response(reply.status)
                chunked = reply.getheader("Content-Length") is None and self.command != "HEAD"
                for k, v in reply.getheaders():
                    if k.lower() not in HOP:
                        self.send_header(k, v)
                if chunked:
                    self.send_header("Connection", "close")
                    self.close_connection = True
                self.end_headers()
                sent, first = 0, True
                while self.command != "HEAD":
                    data = reply.read(proxy.chunk if blob else 1 << 20)
                    if not data:
                        break
                    if blob and proxy.corrupt and first:
                        data = bytes([data[0] ^ 0xFF]) + data[1:]
                    first = False
                    if blob and proxy.cut_after is not None and proxy.blob_bytes >= proxy.cut_after:
                        self.close_connection = True
                        break
                    self.wfile.write(data)
                    if blob:
                        with proxy.lock:
                            proxy.blob_bytes += len(data)
                        if proxy.rate:
                            time.sleep(len(data) / proxy.rate)
                    sent += len(data)
                conn.close()

            def _any(self):
                try:
                    self._forward()
                except (BrokenPipeError, ConnectionResetError, TimeoutError):
                    self.close_connection = True

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _any

        return Handler
