"""The layer list a create builds, and the blobs it writes for text layers and the config.

Layer order: base layers (inherited, or model/projector/adapter) -> replaced template/system (moved to
the end) -> appended licenses -> re-appended merged params -> messages. Blobs are written with Go's JSON
encoding (store.gocompat) so they hash like Ollama's, and every blob a layer names is pinned from the
moment it is seen until the manifest is written, so a concurrent delete cannot prune it.
"""

from __future__ import annotations

from contextlib import ExitStack
from typing import Any

from corral.store.digests import find_digests
from corral.store.errors import Internal, NotFound
from corral.store.gguf_info import human_parameter_count
from corral.store.gocompat import go_json
from corral.store.manifests import (
    GGUF_MEDIA_TYPES,
    MEDIA_TYPE_CONFIG,
    MEDIA_TYPE_LICENSE,
    MEDIA_TYPE_MESSAGES,
    MEDIA_TYPE_PARAMS,
    MEDIA_TYPE_SYSTEM,
    MEDIA_TYPE_TEMPLATE,
    TEMPLATE_MEDIA_TYPES,
    Layer,
    Manifest,
)
from corral.store.models import ModelStore
from corral.store.names import Name

INHERITED_CONFIG_KEYS = ("renderer", "parser", "requires", "capabilities")


class Layers:
    """The layer list being built, with each layer's status line and the digests it replaced."""

    def __init__(self, store: ModelStore, stack: ExitStack):
        self.store, self.stack = store, stack
        self.entries: list[tuple[Layer, str]] = []
        self.removed: list[str] = []

    def pin(self, digests: list[str]) -> None:
        self.stack.enter_context(self.store.pinned(digests))

    def append(self, layer: Layer, created: bool) -> None:
        status = "creating new layer" if created else "using existing layer"
        self.entries.append((layer, f"{status} {layer.digest}"))

    def imported(self, media_type: str, digest: str, created: bool) -> Layer:
        """A layer for a blob just imported into the store (converted or quantized), pinned."""
        self.pin([digest])
        if not self.store.blobs.has(digest):
            raise Internal(f"blob {digest} was removed while creating the model")
        return Layer(media_type, digest, self.store.blobs.size(digest))

    def add_blob(self, data: bytes, media_type: str) -> None:
        """Writes (or finds) a blob for `data` and appends it as a layer."""
        self.append(*self.write(data, media_type))

    def write(self, data: bytes, media_type: str) -> tuple[Layer, bool]:
        """Stores `data` and pins it; returns (layer, created)."""
        for _ in range(3):
            digest, created = self.store.blobs.write([data])
            self.pin([digest])
            if self.store.blobs.has(digest):  # pinned and present: no prune can remove it now
                return Layer(media_type, digest, len(data)), created
        raise Internal(f"blob {digest} was removed while creating the model")

    def drop(self, media_types: tuple[str, ...]) -> None:
        self.removed += [layer.digest for layer, _ in self.entries if layer.media_type in media_types]
        self.entries = [(layer, s) for layer, s in self.entries if layer.media_type not in media_types]

    def of_type(self, media_type: str) -> list[Layer]:
        return [layer for layer, _ in self.entries if layer.media_type == media_type]


def inherit(store: ModelStore, from_name: Name, layers: Layers) -> dict:
    """Appends the base model's layers (from = its display name); returns the config keys it passes on."""
    manifest, _, _ = store.manifests.read(from_name)
    layers.pin(manifest.all_digests())
    for layer in manifest.layers:
        path = store.blobs.path(layer.digest)
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            raise Internal(f"stat {path}: no such file or directory") from None
        layers.append(Layer(layer.media_type, layer.digest, size, from_name.display, layer.name), created=False)
    try:
        base = store.config(manifest.config.digest)
    except Exception:  # Ollama ignores an unreadable base config here too
        return {}
    return {key: base[key] for key in INHERITED_CONFIG_KEYS if base.get(key)}


def gguf_config(store: ModelStore, layers: Layers) -> dict:
    """Format, family, families, parameter size and file type from the GGUF layers, first one winning."""
    config: dict[str, Any] = {"model_format": "", "model_family": "", "model_families": None, "model_type": "",
                              "file_type": ""}
    for layer, _ in layers.entries:
        if layer.media_type not in GGUF_MEDIA_TYPES:
            continue
        info = store.gguf(layer.digest)
        config["model_format"] = config["model_format"] or "gguf"
        config["model_family"] = config["model_family"] or info.architecture
        config["model_type"] = config["model_type"] or human_parameter_count(info.parameter_count)
        config["file_type"] = config["file_type"] or info.file_type
        config["model_families"] = (config["model_families"] or []) + [info.architecture]
    return config


def text_layers(store: ModelStore, layers: Layers, template: str, system: str, licenses: list[str],
                parameters: dict, messages: list[dict]) -> None:
    """The request's text layers: template and system replace, licenses append, params merge over the
    inherited ones (request keys win), messages replace."""
    if template:
        layers.drop(TEMPLATE_MEDIA_TYPES)
        layers.add_blob(template.encode("utf-8"), MEDIA_TYPE_TEMPLATE)
    if system:
        layers.drop((MEDIA_TYPE_SYSTEM,))
        layers.add_blob(system.encode("utf-8"), MEDIA_TYPE_SYSTEM)
    for text in licenses:
        layers.add_blob(text.encode("utf-8"), MEDIA_TYPE_LICENSE)
    merged = dict(parameters)
    for layer in layers.of_type(MEDIA_TYPE_PARAMS):
        for key, value in store.read_layer_json(layer, dict).items():
            merged.setdefault(key, value)
    if merged:
        layers.drop((MEDIA_TYPE_PARAMS,))
        layers.add_blob(go_json(merged, sort_keys=True), MEDIA_TYPE_PARAMS)
    if messages:
        layers.drop((MEDIA_TYPE_MESSAGES,))
        layers.add_blob(go_json(messages), MEDIA_TYPE_MESSAGES)


def config_layer(layers: Layers, config: dict) -> Layer:
    """The config blob, keys in Ollama's ConfigV2 order (empty optional keys left out)."""
    ordered = {key: config.get(key, "") for key in
               ("model_format", "model_family", "model_families", "model_type", "file_type")}
    for key in ("renderer", "parser", "requires", "remote_host", "remote_model", "capabilities",
                "context_length", "embedding_length", "base_name"):
        if config.get(key):
            ordered[key] = config[key]
    ordered["architecture"], ordered["os"] = "amd64", "linux"
    ordered["rootfs"] = {"type": "layers", "diff_ids": [layer.digest for layer, _ in layers.entries]}
    return layers.write(go_json(ordered), MEDIA_TYPE_CONFIG)[0]


def old_digests(store: ModelStore, name: Name) -> list[str]:
    """The blobs of the manifest about to be overwritten (none if there is none)."""
    try:
        raw, _ = store.manifests.read_raw(name)
    except NotFound:
        return []
    try:
        return Manifest.from_bytes(raw).all_digests()
    except ValueError:
        return sorted(find_digests(raw))
