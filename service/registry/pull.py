"""Pull: registry manifest -> missing blobs (shared, resumable, verified) -> manifest as served -> prune.

Why in this order (spec §5 pull, §6): the manifest is written last and byte-for-byte as the registry
served it, so a model appears in /api/tags only when every blob it names is on disk and verified, and its
digest equals the registry's manifest digest. Progress lines follow Ollama's stream exactly, because
clients (the CLI's progress bars, Open WebUI) parse them: `pulling manifest`, one `pulling <12 hex>`
line per blob every ~60 ms, `verifying sha256 digest`, `writing manifest`, `removing unused layers` (only
when the tag's previous version left blobs nothing references), `success`. A blob already in the store
is used only if it is intact (store/verify.py: its stamp, else a hash); a damaged one is fetched again.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from contextlib import ExitStack

from corral.service.registry.client import MANIFEST_ACCEPT, RegistryClient, error_text
from corral.service.registry.download import Downloads
from corral.store.digests import parse_digest
from corral.store.errors import Cancelled, CorralError, Internal, NotFound
from corral.store.locks import Busy, lock_path
from corral.store.manifests import Manifest
from corral.store.names import require_name
from corral.store.prune import noprune

log = logging.getLogger("corral.registry")

PROGRESS_SECONDS = 0.06
MANIFEST_ACCEPT_ALL = f"{MANIFEST_ACCEPT}, application/vnd.oci.image.manifest.v1+json"


def fetch_manifest(client: RegistryClient, name, insecure: bool) -> bytes:
    """The manifest's exact bytes; Ollama's texts for a missing model and for registry errors."""
    url = client.url(name, insecure, "manifests", name.tag)
    try:
        reply = client.request("GET", url, headers={"Accept": MANIFEST_ACCEPT_ALL})
    except CorralError as exc:  # unreachable, unauthorized: same class, with Ollama's prefix
        raise exc.__class__(f"pull model manifest: {exc.message}") from None
    with reply:
        if reply.status_code == 404:
            raise NotFound("pull model manifest: file does not exist")
        if reply.status_code >= 400:
            raise Internal(f"pull model manifest: {error_text(reply)}")
        return reply.content


def _wait(download, downloads: Downloads, status: str, cancel: threading.Event) -> Iterator[dict]:
    """Progress lines of a (shared) download until it ends; leaving early releases it."""
    last = None
    try:
        while not download.finished.wait(PROGRESS_SECONDS):
            if cancel.is_set():
                raise Cancelled("pull cancelled")
            completed = download.completed
            if completed != last:
                last = completed
                yield _line(status, download.digest, download.total, completed)
    finally:
        downloads.release(download)
    if download.error is not None:
        raise download.error
    if last != download.total:
        yield _line(status, download.digest, download.total, download.total)


def _line(status: str, digest: str, total: int, completed: int) -> dict:
    line = {"status": status, "digest": digest, "total": total}
    if completed:
        line["completed"] = completed
    return line


def pull(client: RegistryClient, downloads: Downloads, store, name_text: str, insecure: bool,
         cancel: threading.Event) -> Iterator[dict]:
    """Yields Ollama's pull progress dicts; errors before the first line are raised before it."""
    name = require_name(name_text or "")
    yield {"status": "pulling manifest"}
    raw = fetch_manifest(client, name, insecure)
    try:
        manifest = Manifest.from_bytes(raw)
        layers = [*manifest.layers, manifest.config]
        for layer in layers:
            layer.digest = parse_digest(layer.digest)  # also refuses digests that could escape blobs/
    except ValueError as exc:
        raise Internal(f"pull model manifest: {exc}") from None

    # Pinned: a concurrent delete (here or in another server on the store) must not prune a blob this
    # manifest is about to reference; a blob downloaded meanwhile is pinned again once it exists.
    with ExitStack() as pins:
        pins.enter_context(store.pinned(manifest.all_digests()))
        for layer in layers:
            if cancel.is_set():
                raise Cancelled("pull cancelled")
            status = f"pulling {layer.digest[7:19]}"
            if store.blobs.intact(layer.digest):  # a damaged local copy is fetched again, not trusted
                _drop_stale_records(store, layer.digest)
                yield _line(status, layer.digest, layer.size, layer.size)
                continue
            if store.blobs.has(layer.digest):
                log.warning("blob %s is corrupt: downloading it again", layer.digest)
            url = client.url(name, insecure, "blobs", layer.digest)
            download = downloads.acquire(url, layer.digest, layer.size)
            yield from _wait(download, downloads, status, cancel)
            pins.enter_context(store.pinned([layer.digest]))
            if not store.blobs.has(layer.digest):
                raise Internal(f"blob {layer.digest} was removed while pulling the model")

        yield {"status": "verifying sha256 digest"}  # each blob was verified before it became visible
        yield {"status": "writing manifest"}
        local = store.manifests.resolve(name)
        try:
            old = Manifest.from_bytes(store.manifests.read_raw(local)[0]).all_digests()
        except (NotFound, ValueError):
            old = []
        store.manifests.write(local, raw)
    if old and not noprune():
        removed = store.prune(set(old) - set(manifest.all_digests()))
        if removed:
            yield {"status": "removing unused layers"}
    yield {"status": "success"}


def _drop_stale_records(store, digest: str) -> None:
    """Part records left by a crash between the final rename and their removal (unless a download, in
    another server on the store, holds them)."""
    partial = store.paths.partial(digest)
    try:
        fd = lock_path(partial)
    except Busy:
        return
    try:
        for path in partial.parent.glob(partial.name + "-*"):
            path.unlink(missing_ok=True)
    finally:
        if fd is not None:
            os.close(fd)
