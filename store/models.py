"""The model store: list, show, copy, delete and prune over Ollama's on-disk layout (spec §5, §7).

Why one facade: every RPC that touches models goes through ModelStore, so the rules that keep the store
consistent live in one place: names are canonicalised for case before use, a blob is deleted only when
no manifest references it, and a create in progress pins the blobs it is about to reference so that a
concurrent delete cannot prune them before its manifest is written (Ollama has that race).

Listing must stay cheap however big the models are and however many there are: it reads manifests and
config blobs once per change (store/index.py keeps every manifest's parse, checked against the disk at
each listing; config blobs are cached by digest, since blobs never change) and never stats or reads a
model blob. show and model_spec read the GGUF header (cached by digest too); a loaded model (manifest,
text layers, GGUF header) is cached by its manifest's stat, so a repeated show or generate costs one stat.
What the caches hand out is shared between requests and read-only. model_spec, what inference loads,
also checks that the weights still hash to their digests (store/verify.py: one stat per file while their
verification stamps hold), so a damaged blob is an error naming it rather than a model serving garbage.
Creating models is a service orchestration (service/create/), and so is judging capabilities
(service/prompt/capabilities.py): show is given the list.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import stat
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from corral.store.blobs import BlobStore
from corral.store.config import models_root
from corral.store.digests import find_digests
from corral.store.errors import CorralError, FailedPrecondition, Internal, InvalidArgument, NotFound
from corral.store.gguf_info import GGUFInfo, read_gguf
from corral.store.gocompat import go_quote
from corral.store.index import IndexedManifest, ManifestIndex, settled, stat_key
from corral.store.manifests import (
    MEDIA_TYPE_ADAPTER,
    MEDIA_TYPE_LICENSE,
    MEDIA_TYPE_MESSAGES,
    MEDIA_TYPE_MODEL,
    MEDIA_TYPE_PARAMS,
    MEDIA_TYPE_PROJECTOR,
    MEDIA_TYPE_SYSTEM,
    TEMPLATE_MEDIA_TYPES,
    Layer,
    Manifest,
    ManifestStore,
)
from corral.store.modelfile_print import format_parameters, format_show_modelfile
from corral.store.names import Name, parse_name, require_name
from corral.store.paths import StorePaths
from corral.store.prune import PRUNE_GRACE_SECONDS, Pruner

log = logging.getLogger(__name__)

DEFAULT_TEMPLATE = "{{ .Prompt }}"


class _LRU:
    """A small thread-safe LRU map for immutable, digest-keyed parses."""

    def __init__(self, size: int):
        self.size, self.lock = size, threading.Lock()
        self.items: OrderedDict[str, object] = OrderedDict()

    def get_or(self, key: str, load: Callable[[], object]):
        with self.lock:
            if key in self.items:
                self.items.move_to_end(key)
                return self.items[key]
        value = load()
        with self.lock:
            self.items[key] = value
            while len(self.items) > self.size:
                self.items.popitem(last=False)
        return value


@dataclass
class ModelSpec:
    """Everything the engine needs to load and prompt a model. Cached and shared: read-only."""

    name: str
    digest: str
    model_path: Path
    adapter_paths: list[Path]
    projector_paths: list[Path]
    template: str | None
    system: str
    params: dict
    messages: list[dict]
    config: dict
    details: dict
    gguf: GGUFInfo


@dataclass
class LoadedModel:
    """A manifest with its small layers read: what Ollama's GetModel returns. Cached by the manifest's
    stat and shared between requests: read-only (`memo` holds what is derived from it, such as its spec)."""

    name: Name
    manifest: Manifest
    raw: bytes
    mtime_ns: int
    config: dict
    model_layer: Layer | None = None
    gguf: GGUFInfo | None = None  # the model layer's, None without one
    adapter_paths: list[Path] = field(default_factory=list)
    projector_paths: list[Path] = field(default_factory=list)
    template: str | None = None
    system: str = ""
    params: dict = field(default_factory=dict)
    messages: list[dict] = field(default_factory=list)
    licenses: list[str] = field(default_factory=list)
    memo: dict = field(default_factory=dict, repr=False, compare=False)


def details_from_config(config: dict, parent_model: str = "") -> dict:
    """The `details` object of tags, show and ps."""
    return {
        "parent_model": parent_model,
        "format": config.get("model_format", ""),
        "family": config.get("model_family", ""),
        "families": config.get("model_families"),
        "parameter_size": config.get("model_type", ""),
        "quantization_level": config.get("file_type", ""),
    }


class ModelStore:
    def __init__(self, root: str | os.PathLike | None = None):
        self.paths = StorePaths(root if root is not None else models_root())
        self.paths.ensure_dirs()
        self.blobs = BlobStore(self.paths)
        self.manifests = ManifestStore(self.paths)
        self._configs = _LRU(1024)
        self._ggufs = _LRU(8)
        self.index = ManifestIndex(self.manifests)
        self._listing: tuple[int, list[dict]] | None = None  # (index version, list_models())
        self._loaded: OrderedDict[str, tuple[tuple, bool, LoadedModel]] = OrderedDict()
        self._loaded_lock = threading.Lock()
        self.pruner = Pruner(self.blobs, self.manifests, self.index)

    # -- reading ---------------------------------------------------------------------------------

    def config(self, digest: str, copy_: bool = True) -> dict:
        """A parsed config blob (cached by digest); OSError/ValueError if unreadable. A copy is returned
        unless the caller only reads it (copy_=False), which keeps hot paths such as /api/tags cheap."""
        def load() -> dict:
            with self.blobs.open(digest) as f:
                doc = json.load(f)
            if not isinstance(doc, dict):
                raise ValueError("config blob is not a JSON object")
            return doc
        doc = self._configs.get_or(digest, load)
        return copy.deepcopy(doc) if copy_ else doc

    def gguf(self, digest: str) -> GGUFInfo:
        """The GGUF metadata of a model/adapter/projector blob (cached by digest); Internal on failure."""
        path = self.blobs.path(digest)
        if not path.is_file():  # one stat, so a cached parse never hides a deleted blob
            raise Internal(f"open {path}: no such file or directory")

        def load():
            try:
                return read_gguf(path)
            except FileNotFoundError:
                raise Internal(f"open {path}: no such file or directory") from None
            except InvalidArgument as err:
                raise Internal(err.message) from None
        return self._ggufs.get_or(digest, load)

    def read_layer_text(self, layer: Layer) -> str:
        try:
            return self.blobs.path(layer.digest).read_bytes().decode("utf-8", errors="replace")
        except FileNotFoundError:
            raise Internal(f"open {self.blobs.path(layer.digest)}: no such file or directory") from None

    def read_layer_json(self, layer: Layer, kind: type):
        try:
            value = json.loads(self.read_layer_text(layer))
        except json.JSONDecodeError as err:
            raise Internal(f"invalid {layer.media_type} layer {layer.digest}: {err}") from None
        if not isinstance(value, kind):
            raise Internal(f"invalid {layer.media_type} layer {layer.digest}")
        return value

    def load(self, name: Name) -> LoadedModel:
        """Reads a model's manifest, config, text layers and GGUF header; NotFound if missing, Internal if
        broken. Cached by the manifest's stat (store/index.py says why that is never stale)."""
        path = str(self.paths.manifest(name))
        with self._loaded_lock:
            cached = self._loaded.get(path)
            if cached is not None:
                self._loaded.move_to_end(path)
        if cached is not None and cached[1]:
            try:
                st = os.stat(path)
            except (FileNotFoundError, NotADirectoryError):
                raise NotFound(f"model '{name.display}' not found") from None
            if stat_key(st) == cached[0]:
                m = cached[2]
                model_path = m.memo.get("model_path")
                if model_path is not None and not os.path.isfile(model_path):
                    raise Internal(f"open {model_path}: no such file or directory")
                return m
        started = time.time_ns()
        raw, st = self.manifests.read_stat(name)
        try:
            manifest = Manifest.from_bytes(raw)
        except ValueError as err:
            raise Internal(f"{name.full}: {err}") from None
        m = self._build(name, manifest, raw, st.st_mtime_ns)
        with self._loaded_lock:
            self._loaded[path] = (stat_key(st), settled(st, started), m)
            self._loaded.move_to_end(path)
            while len(self._loaded) > 256:
                self._loaded.popitem(last=False)
        return m

    def _build(self, name: Name, manifest: Manifest, raw: bytes, mtime_ns: int) -> LoadedModel:
        try:
            config = self.config(manifest.config.digest, copy_=False)
        except (OSError, ValueError, CorralError) as err:
            raise Internal(f"{name.display}: cannot read config blob: {err}") from None
        m = LoadedModel(name, manifest, raw, mtime_ns, config)
        for layer in manifest.layers:
            kind = layer.media_type
            if kind == MEDIA_TYPE_MODEL:
                m.model_layer = layer
            elif kind == MEDIA_TYPE_ADAPTER:
                m.adapter_paths.append(self.blobs.path(layer.digest))
            elif kind == MEDIA_TYPE_PROJECTOR:
                m.projector_paths.append(self.blobs.path(layer.digest))
            elif kind in TEMPLATE_MEDIA_TYPES:
                m.template = self.read_layer_text(layer)
            elif kind == MEDIA_TYPE_SYSTEM:
                m.system = self.read_layer_text(layer)
            elif kind == MEDIA_TYPE_PARAMS:
                m.params.update(self.read_layer_json(layer, dict))
            elif kind == MEDIA_TYPE_MESSAGES:
                m.messages = [{"role": str(x.get("role", "")), "content": str(x.get("content", ""))}
                              for x in self.read_layer_json(layer, list) if isinstance(x, dict)]
            elif kind == MEDIA_TYPE_LICENSE:
                m.licenses.append(self.read_layer_text(layer))
        if m.model_layer is not None:
            m.gguf = self.gguf(m.model_layer.digest)
            m.memo["model_path"] = str(self.blobs.path(m.model_layer.digest))
        return m

    def _load_named(self, name_text: str, missing: str) -> LoadedModel:
        name = require_name(name_text)
        try:  # a manifest at the exact path needs no case matching (resolve stats every level)
            exact = stat.S_ISREG(os.stat(self.paths.manifest(name)).st_mode)
        except (FileNotFoundError, NotADirectoryError):
            exact = False
        if not exact:
            name = self.manifests.resolve(name)
        try:
            return self.load(name)
        except NotFound:
            raise NotFound(missing) from None

    # -- the API ---------------------------------------------------------------------------------

    def list_models(self) -> list[dict]:
        """/api/tags entries, newest manifest first (second resolution, stable).

        Costs one stat per directory and manifest while nothing changed (store/index.py); the list is
        rebuilt only when a manifest changed, and each entry only when its own manifest did. The returned
        list and dicts are shared with the cache: callers must not modify them."""
        version, manifests = self.index.snapshot()
        listing = self._listing
        if listing is not None and listing[0] == version:
            return listing[1]
        entries, complete = [], True
        for e in manifests:
            entry = e.memo.get("tags")
            if entry is None:
                try:
                    entry = e.memo["tags"] = self._tags_entry(e)
                except (OSError, ValueError, CorralError) as err:
                    log.warning("skipping model %s: %s", e.name.display, err)
                    complete = False  # a missing config blob may yet appear: not cached
                    continue
            entries.append((e.mtime_ns // 1_000_000_000, entry))
        entries.sort(key=lambda e: -e[0])
        result = [entry for _, entry in entries]
        if complete:
            self._listing = (version, result)
        return result

    def _tags_entry(self, e: IndexedManifest) -> dict:
        if e.manifest is None:
            raise ValueError("manifest does not parse")
        config = self.config(e.manifest.config.digest, copy_=False)
        model_layer = e.manifest.first(MEDIA_TYPE_MODEL)
        parent = (model_layer.from_ or "") if model_layer else ""
        return {
            "name": e.name.display, "model": e.name.display, "modified_at": e.mtime_ns / 1e9,
            "size": e.manifest.size, "digest": _sha256_hex(e.raw),
            "details": details_from_config(config, parent),
        }

    def find(self, name_text: str) -> LoadedModel:
        """The model show describes, by the name a client gave (with show's error texts)."""
        if not name_text:
            raise InvalidArgument("model is required")
        return self._load_named(name_text, f"model '{name_text}' not found")

    def show(self, m: LoadedModel, capabilities: list[str], verbose: bool = False, system: str | None = None,
             options: dict | None = None) -> dict:
        """The /api/show response for a model from find(); its capabilities are the service's judgement."""
        info = m.gguf
        template = m.template if m.template is not None else DEFAULT_TEMPLATE
        shown_system = system or m.system
        modelfile_params = {**m.params, **(options or {})}
        model_path = self.blobs.path(m.model_layer.digest) if m.model_layer else ""
        out: dict = {}
        if m.licenses:
            out["license"] = "\n".join(m.licenses)
        out["modelfile"] = format_show_modelfile(
            m.name.display, model_path, m.adapter_paths, m.projector_paths, template, shown_system,
            modelfile_params, m.licenses, m.messages,
            renderer=m.config.get("renderer") or None, parser=m.config.get("parser") or None)
        if m.params:
            out["parameters"] = format_parameters(m.params)
        out["template"] = template
        if shown_system:
            out["system"] = shown_system
        for key in ("renderer", "parser"):
            if m.config.get(key):
                out[key] = m.config[key]
        out["details"] = details_from_config(m.config, _parent(m))
        if m.messages:
            out["messages"] = m.messages
        out["model_info"] = info.model_info(verbose) if info else {}
        if m.projector_paths:
            projector = self.gguf(next(layer.digest for layer in m.manifest.layers
                                       if layer.media_type == MEDIA_TYPE_PROJECTOR))
            out["projector_info"] = projector.model_info(verbose)
        out["tensors"] = info.tensors_json() if info else []
        if capabilities:
            out["capabilities"] = list(capabilities)
        out["modified_at"] = m.mtime_ns / 1e9
        if m.config.get("requires"):
            out["requires"] = m.config["requires"]
        return out

    def model_spec(self, name_text: str) -> ModelSpec:
        """What the engine needs to run a model; NotFound "model 'x' not found" if missing."""
        m = self._load_named(name_text, f"model '{name_text}' not found")
        if m.model_layer is None or m.gguf is None:
            raise FailedPrecondition(f"model '{name_text}' has no GGUF model layer")
        self.verify_weights(m)
        spec = m.memo.get("spec")
        if spec is None:
            spec = m.memo["spec"] = self._spec(m)
        return spec

    def verify_weights(self, m: LoadedModel) -> None:
        """The files a runner would load (model, adapters, projectors) must hash to their digests: one stat
        each while their verification stamps hold (store/verify.py), else a hash; a damaged blob raises
        Internal naming its digest, rather than being served as the model."""
        for layer in m.manifest.layers:
            if layer.media_type in (MEDIA_TYPE_MODEL, MEDIA_TYPE_ADAPTER, MEDIA_TYPE_PROJECTOR):
                try:
                    self.blobs.verify(layer.digest)
                except NotFound:
                    raise Internal(f"open {self.blobs.path(layer.digest)}: no such file or directory") from None

    def _spec(self, m: LoadedModel) -> ModelSpec:
        assert m.model_layer is not None and m.gguf is not None
        return ModelSpec(
            name=m.name.display, digest=_sha256_hex(m.raw), model_path=self.blobs.path(m.model_layer.digest),
            adapter_paths=m.adapter_paths, projector_paths=m.projector_paths, template=m.template,
            system=m.system, params=m.params, messages=m.messages, config=m.config,
            details=details_from_config(m.config, _parent(m)), gguf=m.gguf)

    def copy(self, src_text: str, dst_text: str) -> None:
        """Copies the source manifest byte for byte; blobs are shared, not copied."""
        src = parse_name(src_text)
        if not src.is_valid():
            raise InvalidArgument(f"source {go_quote(src_text)} is invalid")
        src = self.manifests.resolve(src)
        dst = parse_name(dst_text)
        if not dst.is_valid():
            raise InvalidArgument(f"destination {go_quote(dst_text)} is invalid")
        dst = self.manifests.resolve(dst)
        try:
            raw, _ = self.manifests.read_raw(src)
        except NotFound:
            raise NotFound(f"model {go_quote(src_text)} not found") from None
        if self.paths.manifest(src) != self.paths.manifest(dst):
            self.manifests.write(dst, raw)

    def delete(self, name_text: str) -> None:
        """Deletes a manifest, its empty directories, then its blobs that nothing else references."""
        if not name_text:
            raise InvalidArgument("model is required")
        name = parse_name(name_text)
        if not name.is_valid():
            raise InvalidArgument(f"name {go_quote(name_text)} is invalid")
        name = self.manifests.resolve(name)
        missing = f"model '{name_text}' not found"
        try:
            raw, _ = self.manifests.read_raw(name)
            try:
                candidates = Manifest.from_bytes(raw).all_digests()
            except ValueError:  # a corrupt manifest can still be deleted
                candidates = sorted(find_digests(raw))
            self.manifests.delete(name)
        except NotFound:
            raise NotFound(missing) from None
        self.index.forget(self.paths.manifest(name))
        self.prune(candidates)

    # -- blob lifetime (store/prune.py) ---------------------------------------------------------

    def pinned(self, digests: Iterable[str]):
        """Context manager: keeps these blobs from being pruned (for a create or pull in progress)."""
        return self.pruner.pinned(digests)

    def prune(self, extra_candidates: Iterable[str]) -> list[str]:
        """Deletes the candidate blobs that no manifest references and nothing pins; returns them."""
        return self.pruner.prune(extra_candidates)

    def startup_prune(self, grace_seconds: float = PRUNE_GRACE_SECONDS) -> list[str]:
        """The prune at server start (spec §7, keeping resumable downloads); see store/prune.py."""
        return self.pruner.startup_prune(grace_seconds)


def _sha256_hex(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


def _parent(m: LoadedModel) -> str:
    return (m.model_layer.from_ or "") if m.model_layer else ""
