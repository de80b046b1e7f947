"""Push: every blob the registry lacks (mounted when it can be, else uploaded), then the manifest.

Why this shape (spec §5 push, §6): a HEAD first, so blobs the registry has cost nothing; a cross-repository
mount (`POST …/blobs/uploads/?mount=<digest>&from=<repo>`) for layers whose `from` names another model of
the same registry, so a derived model does not upload its base again; otherwise a monolithic PUT for small
blobs and chunked PATCHes for large ones, always following the newest Location the registry returns
(Docker's registry encodes its upload state in it). Progress lines are Ollama's: `retrieving manifest`,
`pushing <12 hex>` with digest/total/completed, `pushing manifest`, `success`.

Unlike Ollama, the manifest is sent as the stored bytes rather than re-encoded, so a model pushed and
pulled again keeps its digest.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from urllib.parse import urlencode, urljoin

from corral.service import metrics
from corral.service.registry.client import RegistryClient, error_text
from corral.service.registry.pull import PROGRESS_SECONDS, _line
from corral.store.errors import Cancelled, CorralError, Internal, InvalidArgument, NotFound
from corral.store.manifests import MEDIA_TYPE_MANIFEST
from corral.store.names import parse_name

OCTET = "application/octet-stream"


class _Body:
    """A window of a blob file as a request body: counts what was sent and stops when cancelled."""

    def __init__(self, path, start: int, length: int, sent: list, cancel: threading.Event):
        self.file = open(path, "rb", buffering=0)  # noqa: SIM115 - closed by close(), after requests sent it
        self.file.seek(start)
        self.remaining = self.length = length
        self.sent, self.cancel = sent, cancel

    def __len__(self):
        return self.length

    def read(self, n: int = -1) -> bytes:
        if self.cancel.is_set():
            raise Cancelled("push cancelled")
        n = self.remaining if n is None or n < 0 else min(n, self.remaining)
        data = self.file.read(n) if n else b""
        self.remaining -= len(data)
        self.sent[0] += len(data)
        metrics.PUSHED_BYTES.inc(len(data))
        if not data:
            self.file.close()
        return data


def _location(reply, current: str) -> str:
    loc = reply.headers.get("Docker-Upload-Location") or reply.headers.get("Location")
    if not loc:
        raise Internal(f"upload: registry sent no Location ({reply.status_code})")
    return urljoin(current, loc)


def _with_query(url: str, **params) -> str:
    return url + ("&" if "?" in url else "?") + urlencode(params)


class BlobUpload:
    """Uploads one blob on a thread; the generator in push() reports `sent` while it runs."""

    def __init__(self, client: RegistryClient, store, name, insecure: bool, layer, cancel: threading.Event):
        self.client, self.store, self.name, self.insecure = client, store, name, insecure
        self.layer, self.cancel = layer, cancel
        self.sent = [0]
        self.error: BaseException | None = None

    def _body(self, start: int, length: int):
        path = self.store.blobs.path(self.layer.digest)
        base = self.sent[0]

        def make():  # called again for a retry after a 401: progress goes back to where it began
            self.sent[0] = base
            return _Body(path, start, length, self.sent, self.cancel)

        return make

    def exists(self) -> bool:
        reply = self.client.request("HEAD", self.client.url(self.name, self.insecure, "blobs", self.layer.digest))
        reply.close()
        if reply.status_code == 200:
            return True
        if reply.status_code != 404:
            raise Internal(f"push blob {self.layer.digest}: {error_text(reply)}")
        return False

    def start(self) -> str | None:
        """Begins an upload: None when the blob was mounted from another repository, else the upload URL."""
        url = self.client.url(self.name, self.insecure, "blobs/uploads", "")
        source = parse_name(self.layer.from_) if self.layer.from_ else None
        if source is not None and source.is_valid() and source.host.lower() == self.name.host.lower() \
                and source.repository != self.name.repository:
            url = _with_query(url, mount=self.layer.digest, **{"from": source.repository})
        reply = self.client.request("POST", url)
        reply.close()
        if reply.status_code == 201:
            return None
        if reply.status_code != 202:
            raise Internal(f"push blob {self.layer.digest}: {error_text(reply)}")
        return _location(reply, url)

    def run(self, url: str) -> None:
        try:
            self._upload(url)
        except BaseException as exc:
            self.error = exc

    def _upload(self, url: str) -> None:
        size, digest = self.layer.size, self.layer.digest
        chunk = self.client.tuning.chunk_size_for(size)
        if size <= chunk:  # monolithic: one PUT carries the data and closes the upload
            reply = self.client.request("PUT", _with_query(url, digest=digest), data=self._body(0, size),
                                        headers={"Content-Type": OCTET, "Content-Length": str(size)})
            self._check(reply, 201)
            return
        for start in range(0, size, chunk):
            length = min(chunk, size - start)
            headers = {"Content-Type": OCTET, "Content-Length": str(length),
                       "Content-Range": f"{start}-{start + length - 1}", "X-Redirect-Uploads": "1"}
            reply = self.client.request("PATCH", url, data=self._body(start, length), headers=headers,
                                        allow_redirects=False)
            if reply.status_code == 307:  # Ollama's registry: put this part to a presigned URL
                target = urljoin(url, reply.headers["Location"])
                url = _location(reply, url) if reply.headers.get("Docker-Upload-Location") else url
                reply.close()
                put = self.client.request("PUT", target, data=self._body(start, length), auth=False,
                                          headers={"Content-Type": OCTET, "Content-Length": str(length)})
                self._check(put, 200, 201, 202, 204)
                continue
            self._check(reply, 202)
            url = _location(reply, url)
        self._check(self.client.request("PUT", _with_query(url, digest=digest)), 201)

    def _check(self, reply, *ok: int) -> None:
        with reply:
            if reply.status_code not in ok:
                raise Internal(f"push blob {self.layer.digest}: {error_text(reply)}")


def push_blob(client, store, name, insecure, layer, cancel) -> Iterator[dict]:
    status = f"pushing {layer.digest[7:19]}"
    upload = BlobUpload(client, store, name, insecure, layer, cancel)
    if not upload.exists():
        url = upload.start()
        if url is not None:
            yield _line(status, layer.digest, layer.size, 0)
            thread = threading.Thread(target=upload.run, args=(url,), name="push-blob", daemon=True)
            thread.start()
            last = None
            while thread.is_alive():
                thread.join(PROGRESS_SECONDS)
                if cancel.is_set():
                    thread.join()
                    raise Cancelled("push cancelled")
                if upload.sent[0] != last:
                    last = upload.sent[0]
                    yield _line(status, layer.digest, layer.size, last)
            if upload.error is not None:
                raise upload.error
            if last == layer.size:
                return
    yield _line(status, layer.digest, layer.size, layer.size)


def push(client: RegistryClient, store, name_text: str, insecure: bool,
         cancel: threading.Event) -> Iterator[dict]:
    """Yields Ollama's push progress dicts; a missing name is refused before the first line."""
    if not name_text:
        raise InvalidArgument("model is required")
    name = parse_name(name_text)
    if not name.is_valid():
        raise InvalidArgument("invalid model name")
    yield {"status": "retrieving manifest"}
    local = store.manifests.resolve(name)
    try:
        manifest, raw, _ = store.manifests.read(local)
    except NotFound:
        yield {"status": "couldn't retrieve manifest"}
        raise NotFound(f"open {store.paths.manifest(local)}: no such file or directory") from None
    for layer in [*manifest.layers, manifest.config]:
        if not store.blobs.has(layer.digest):
            raise NotFound(f"open {store.blobs.path(layer.digest)}: no such file or directory")
        store.blobs.verify(layer.digest)  # a damaged blob is named here, not refused by the registry
        yield from push_blob(client, store, name, insecure, layer, cancel)
    yield {"status": "pushing manifest"}
    url = client.url(name, insecure, "manifests", name.tag)
    media_type = manifest.media_type or MEDIA_TYPE_MANIFEST
    try:
        reply = client.request("PUT", url, data=raw, headers={"Content-Type": media_type})
    except CorralError as exc:
        raise exc.__class__(f"push manifest: {exc.message}") from None
    with reply:
        if reply.status_code not in (200, 201, 202):
            raise Internal(f"push manifest: {error_text(reply)}")
    yield {"status": "success"}
