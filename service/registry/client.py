"""HTTP to an OCI (Docker distribution) registry: URLs, pooled connections, auth retries, error texts.

Why: pull and push make dozens of requests per model (manifest, HEADs, parallel range GETs, upload
chunks) that all need the same things: one pooled `requests.Session` (so range requests reuse
connections), an Authorization header remembered per repository (so parallel requests do not each meet a
401), one retry with a fresh header after a 401 challenge, and Go-like error texts, because users compare
them with what Ollama prints (`pull model manifest: file does not exist`, `Get "…": dial tcp …: connect:
connection refused`).

Tuning comes from the environment, read at each use, so that a test (or a `corral serve` subprocess)
can use small parts and short retries: CORRAL_REGISTRY_PART_SIZE (bytes per download part and upload
chunk; by default see Tuning.part_size_for / chunk_size_for), CORRAL_REGISTRY_STREAMS (parallel range
requests per blob, 16), CORRAL_REGISTRY_RETRIES (6 tries, sleeping 1, 2, 4, ... s between them),
CORRAL_REGISTRY_STALL_TIMEOUT (30 s without a byte ends a request, which is then retried).
"""

from __future__ import annotations

import platform
import re
import socket
import threading
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter

from corral.service.registry.auth import ACCESS_DENIED, Authenticator
from corral.service.version import OLLAMA_COMPAT_VERSION
from corral.store.config import RegistryTuning
from corral.store.errors import Unauthenticated, Unavailable

MANIFEST_ACCEPT = "application/vnd.docker.distribution.manifest.v2+json"
USER_AGENT = f"ollama/{OLLAMA_COMPAT_VERSION} ({platform.machine()} {platform.system().lower()}) corral"
MiB = 1 << 20
MB = 1000 * 1000
_REPO_IN_PATH = re.compile(r"/v2/(.+?)/(?:manifests|blobs)/")


class Tuning(RegistryTuning):
    """The environment's tuning (corral.store.config) plus how it sizes parts and chunks."""

    def part_size_for(self, total: int) -> int:
        """Bytes per part: small enough that parts arrive nearly in order, so the hasher, which can only
        follow the contiguous prefix, finishes soon after the last byte (Ollama's 100-1000 MB parts,
        16 at a time, leave up to 16 parts to hash after the download); large enough to keep the
        number of part records and range requests modest."""
        if self.part_size > 0:
            return self.part_size
        return min(max(total // 64, 16 * MiB), 64 * MiB)

    def chunk_size_for(self, total: int) -> int:
        """Bytes per upload chunk: Ollama's clamp(total/16, 100 MB, 1000 MB). Each PATCH costs the
        registry a round of bookkeeping, so chunks are large; they exist for proxies that cap body sizes.
        Blobs up to one chunk go in a single PUT."""
        if self.part_size > 0:
            return self.part_size
        return min(max(total // 16, 100 * MB), 1000 * MB)


class _Adapter(HTTPAdapter):
    """Sends request bodies (files) in 1 MiB writes instead of http.client's 16 KiB."""

    def init_poolmanager(self, *args, **kwargs):
        kwargs["blocksize"] = 1 << 20
        super().init_poolmanager(*args, **kwargs)


def go_error(exc: BaseException, method: str, url: str) -> str:
    """A Go net/http-like text for a transport error: `Get "<url>": dial tcp <host>: connect: …`."""
    host = urlsplit(url).netloc
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:  # find the innermost OS-level cause
        seen.add(id(cause))
        if isinstance(cause, ConnectionRefusedError):
            return f'{method.title()} "{url}": dial tcp {host}: connect: connection refused'
        if isinstance(cause, socket.gaierror):
            return f'{method.title()} "{url}": dial tcp: lookup {urlsplit(url).hostname}: no such host'
        nested = [a for a in getattr(cause, "args", ()) if isinstance(a, BaseException)]
        cause = getattr(cause, "reason", None) or (nested[0] if nested else None) or cause.__context__
    if isinstance(exc, requests.Timeout):
        return f'{method.title()} "{url}": i/o timeout'
    return f'{method.title()} "{url}": {exc}'


class RegistryClient:
    """One per server: a pooled session plus remembered Authorization headers per (host, repository)."""

    def __init__(self, tuning: Tuning | None = None):
        self._tuning = tuning
        self.session = requests.Session()
        adapter = _Adapter(pool_connections=16, pool_maxsize=64)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.session.headers["User-Agent"] = USER_AGENT
        self.auth = Authenticator(self.session, timeout=Tuning.connect_timeout)
        self._headers: dict[tuple[str, str], str] = {}
        self._lock = threading.Lock()

    @property
    def tuning(self) -> Tuning:
        """The fixed tuning given to the constructor, else the environment's as it is now."""
        return self._tuning or Tuning.from_env()  # type: ignore[return-value]  # from_env builds cls

    def close(self):
        self.session.close()

    @staticmethod
    def base(name, insecure: bool) -> str:
        """`<scheme>://<host>`; insecure (or an explicit http:// in the name) means plain HTTP."""
        scheme = "http" if insecure else (name.scheme or "https")
        return f"{scheme}://{name.host}"

    def url(self, name, insecure: bool, kind: str, ref: str) -> str:
        """`…/v2/<ns>/<model>/<kind>/<ref>`, kind being manifests, blobs or blobs/uploads."""
        return f"{self.base(name, insecure)}/v2/{name.namespace}/{name.model}/{kind}/{ref}"

    def _key(self, url: str) -> tuple[str, str]:
        parts = urlsplit(url)
        match = _REPO_IN_PATH.search(parts.path)
        return parts.netloc.lower(), match.group(1) if match else ""

    def request(self, method: str, url: str, *, headers=None, data=None, stream=False, timeout=None,
                allow_redirects=True, auth=True) -> requests.Response:
        """Sends a request, answering 401 challenges; transport errors become Unavailable (Go-like text).

        `data` may be bytes, or a callable returning a fresh body, so the request can be sent again after
        a 401. With auth=False no Authorization is sent (a presigned URL on another host).
        """
        key = self._key(url)
        with self._lock:
            header = self._headers.get(key) if auth else None
        timeout = timeout or (self.tuning.connect_timeout, self.tuning.stall_timeout)
        for _ in range(3):
            sent = dict(headers or {})
            if header:
                sent["Authorization"] = header
            body = data() if callable(data) else data
            try:
                reply = self.session.request(method, url, headers=sent, data=body, stream=stream,
                                             timeout=timeout, allow_redirects=allow_redirects)
            except requests.RequestException as exc:
                raise Unavailable(go_error(exc, method, url)) from None
            if reply.status_code != 401 or not auth:
                return reply
            challenge = reply.headers.get("WWW-Authenticate", "")
            reply.close()
            if not challenge:
                raise Unauthenticated(ACCESS_DENIED)
            header = self.auth.authorize(key[0], challenge, sent.get("Authorization"))
            with self._lock:
                self._headers[key] = header
        raise Unauthenticated(ACCESS_DENIED)


def error_text(reply: requests.Response) -> str:
    """`<code>: <body>` as Ollama formats a registry's error reply."""
    try:
        body = reply.text.strip()
    except Exception:
        body = ""
    return f"{reply.status_code}: {body[:1000]}"
