"""Pull and Push RPCs: the gRPC face of service/registry.

Why a separate class: the servicer stays one line per RPC, and the registry client (a pooled HTTP
session, cached tokens) and the table of downloads in flight live exactly as long as the server, so
concurrent pulls of one model share one download, and close() stops them with their state kept on disk.
`pull_progress` is also what create uses to fetch a missing base model inside its own stream.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

from corral.service.api.convert import progress_message
from corral.service.api.status import cancel_event, handle_errors
from corral.service.registry.client import RegistryClient
from corral.service.registry.download import Downloads
from corral.service.registry.pull import pull
from corral.service.registry.push import push


class Transfer:
    """Registry transfers for one store."""

    def __init__(self, store):
        self.store = store
        self.client = RegistryClient()
        self.downloads = Downloads(self.client, store.paths)

    def pull_progress(self, name_text: str, insecure: bool, cancel: threading.Event) -> Iterator[dict]:
        """Ollama's pull progress dicts for a model name; validation errors are raised before the first."""
        return pull(self.client, self.downloads, self.store, name_text, insecure, cancel)

    def push_progress(self, name_text: str, insecure: bool, cancel: threading.Event) -> Iterator[dict]:
        return push(self.client, self.store, name_text, insecure, cancel)

    @handle_errors
    def Pull(self, request, context):
        cancel = cancel_event(context)
        for line in self.pull_progress(request.model, request.insecure, cancel):
            yield progress_message(line)

    @handle_errors
    def Push(self, request, context):
        cancel = cancel_event(context)
        for line in self.push_progress(request.model, request.insecure, cancel):
            yield progress_message(line)

    def close(self) -> None:
        """Stops downloads in flight (their recorded bytes stay for the next pull) and the session."""
        self.downloads.close()
        self.client.close()
