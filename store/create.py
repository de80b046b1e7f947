"""/api/create (spec §5): build a manifest from an existing model or from uploaded GGUF blobs.

Why two phases: the request is validated and every GGUF is parsed *before* the first progress line, so a
bad request gets a real error status (400/404) instead of an error buried in a 200 stream. The returned
generator then does the work and yields Ollama's exact lines:

    parsing GGUF                         per uploaded GGUF (files, then adapters)
    quantizing F16 model to Q4_K_M       only when quantizing, then "verifying conversion"
    using existing layer sha256:<hex>    per final layer whose blob already existed (inherited, uploaded,
    creating new layer sha256:<hex>      or identical content); else "creating new layer"
    writing manifest
    success

Layer order: base layers (inherited, or model/projector/adapter) -> replaced template/system (moved to
the end) -> appended licenses -> re-appended merged params -> messages. Inherited layers get `from` = the
base model's display name. Blobs are written with Go's JSON encoding (store.gocompat) so they hash like
Ollama's. The blobs a create is about to reference are pinned until its manifest is written; replaced
layers and, unless OLLAMA_NOPRUNE, the overwritten manifest's blobs are pruned at the end.
"""

from __future__ import annotations

import inspect
from collections import abc
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Iterable, Iterator

from corral.store.digests import find_digests, parse_digest
from corral.store.errors import Internal, InvalidArgument, NotFound
from corral.store.gocompat import go_json
from corral.store.manifests import (GGUF_MEDIA_TYPES, MEDIA_TYPE_ADAPTER, MEDIA_TYPE_CONFIG, MEDIA_TYPE_LICENSE,
                             MEDIA_TYPE_MESSAGES, MEDIA_TYPE_MODEL, MEDIA_TYPE_PARAMS, MEDIA_TYPE_PROJECTOR,
                             MEDIA_TYPE_SYSTEM, MEDIA_TYPE_TEMPLATE, TEMPLATE_MEDIA_TYPES, Layer, Manifest)
from corral.store.names import Name, require_name
from corral.store.prune import noprune

if TYPE_CHECKING:
    from corral.store.models import ModelStore

NEITHER = "neither 'from' or 'files' was specified"
PULL_MISSING = "pull model manifest: file does not exist"
QUANT_TYPES = {"F32": "F32", "F16": "F16", "BF16": "BF16", "Q8_0": "Q8_0", "Q4_K_S": "Q4_K_S",
               "Q4_K_M": "Q4_K_M", "Q4_K": "Q4_K_M"}
QUANTIZABLE_SOURCES = ("F16", "BF16", "F32")
ONLY_FLOAT_SOURCES = "quantization is only supported for F16, BF16 and F32 models"
INHERITED_CONFIG_KEYS = ("renderer", "parser", "requires", "capabilities")
_LAYER_RANK = (MEDIA_TYPE_MODEL, MEDIA_TYPE_PROJECTOR, MEDIA_TYPE_ADAPTER)


@dataclass
class _Source:
    """An uploaded GGUF blob named in `files` or `adapters`, parsed during validation."""

    digest: str
    media_type: str
    size: int
    info: object  # GGUFInfo


@dataclass
class _Plan:
    name: Name
    from_name: Name | None = None
    needs_pull: bool = False
    sources: list[_Source] = field(default_factory=list)
    template: str = ""
    system: str = ""
    licenses: list[str] = field(default_factory=list)
    parameters: dict = field(default_factory=dict)
    messages: list[dict] = field(default_factory=list)
    quantize: str = ""
    conversion: Iterator[dict] | None = None  # a started safetensors conversion (first line taken)
    conversion_first: dict | None = None
    conversion_out: object = None  # Path of the GGUF it writes


def start_create(store: "ModelStore", req: dict, pull: Callable[[Name], Iterable[dict]] | None) -> Iterator[dict]:
    """Validates `req` (raising now) and returns the generator that performs the create."""
    plan = _validate(store, req, pull)
    return _run(store, plan, pull)


# -- validation -------------------------------------------------------------------------------------


def _validate(store: "ModelStore", req: dict, pull) -> _Plan:
    plan = _Plan(store.manifests.resolve(require_name(req.get("model") or req.get("name") or "")))
    req = _with_modelfile(req)
    plan.quantize = _quant_type(store, req.get("quantize") or req.get("quantization") or "")
    plan.template, plan.system = _text(req, "template"), _text(req, "system")
    if plan.template and store.validate_template is not None:
        store.validate_template(plan.template)
    plan.licenses = _licenses(req.get("license"))
    if not isinstance(req.get("parameters") or {}, dict):
        raise InvalidArgument("parameters must be an object")
    plan.parameters = dict(req.get("parameters") or {})
    plan.messages = _messages(req.get("messages"))
    files = req.get("files")
    if files is not None:
        _check_paths(files)
    if req.get("from"):
        plan.from_name = store.manifests.resolve(require_name(str(req["from"])))
        plan.needs_pull = not store.manifests.exists(plan.from_name)
        if plan.needs_pull and pull is None:
            raise NotFound(PULL_MISSING)
    elif files is not None and any(path.endswith(".safetensors") for path in files):
        _start_conversion(store, plan, files)
    elif files is not None:
        plan.sources = _gguf_sources(store, files, adapter=False)
    else:
        raise InvalidArgument(NEITHER)
    if req.get("adapters") is not None:
        _check_paths(req["adapters"])
        plan.sources += _gguf_sources(store, req["adapters"], adapter=True)
    if plan.quantize:
        for source in plan.sources:
            if source.media_type == MEDIA_TYPE_MODEL:
                _check_quantizable(store, source.info.file_type, plan.quantize)
    if not plan.needs_pull and plan.conversion is None:
        _check_adapters(store, plan, [])
    return plan


def _start_conversion(store: "ModelStore", plan: _Plan, files: dict) -> None:
    """Starts the safetensors conversion now, so its request errors (unsupported architecture, missing
    config) answer with a status before the stream; its first line is kept for the stream."""
    if store.convert_hook is None:
        raise InvalidArgument("safetensors conversion is not available")
    paths = {name: store.blobs.path(parse_digest(d if isinstance(d, str) else "")) for name, d in files.items()}
    plan.conversion_out = store.paths.temp_blob()
    plan.conversion = store.convert_hook(paths, plan.conversion_out)
    try:
        plan.conversion_first = next(plan.conversion, None)
    except BaseException:
        plan.conversion.close()
        raise


def _model_path(store: "ModelStore", plan: _Plan, inherited: list[Layer]):
    for source in plan.sources:
        if source.media_type == MEDIA_TYPE_MODEL:
            return store.blobs.path(source.digest)
    if plan.from_name is not None and not inherited:
        manifest, _, _ = store.manifests.read(plan.from_name)
        inherited = manifest.layers
    for layer in inherited:
        if layer.media_type == MEDIA_TYPE_MODEL:
            return store.blobs.path(layer.digest)
    return None


def _check_adapters(store: "ModelStore", plan: _Plan, inherited: list[Layer]) -> None:
    """An adapter that does not fit its base makes llama.cpp crash at the first decode: refuse it here."""
    adapters = [s for s in plan.sources if s.media_type == MEDIA_TYPE_ADAPTER]
    if not adapters or store.validate_adapter is None:
        return
    base = _model_path(store, plan, inherited)
    if base is None:
        raise InvalidArgument("invalid adapter: the model has no base weights to apply it to")
    for adapter in adapters:
        store.validate_adapter(base, store.blobs.path(adapter.digest))


def _with_modelfile(req: dict) -> dict:
    """Legacy create: a `modelfile` is used only when neither `from` nor `files` is given."""
    if req.get("from") or req.get("files") is not None or not req.get("modelfile"):
        return req
    from corral.store.modelfile import modelfile_to_create, parse_modelfile

    converted = modelfile_to_create(parse_modelfile(req["modelfile"]), None)
    merged = dict(req)
    for key, value in converted.items():
        if merged.get(key) in (None, "", [], {}):
            merged[key] = value
    return merged


def _quant_type(store: "ModelStore", value) -> str:
    if not value:
        return ""
    if store.normalize_quant_type is not None:
        return store.normalize_quant_type(str(value))
    wanted = str(value).upper()
    if wanted not in QUANT_TYPES:
        raise InvalidArgument(f"unsupported quantization type {wanted} - supported types are "
                              "F32, F16, Q4_K_S, Q4_K_M, Q8_0")
    return QUANT_TYPES[wanted]


def _check_quantizable(store: "ModelStore", file_type: str, wanted: str) -> None:
    if file_type not in QUANTIZABLE_SOURCES:
        raise Internal(ONLY_FLOAT_SOURCES)
    if file_type != wanted and store.quantize_hook is None:
        raise Internal("quantization is not available")


def _text(req: dict, key: str) -> str:
    value = req.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidArgument(f"{key} must be a string")
    return value


def _licenses(value) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return [v for v in value if v]
    raise InvalidArgument(f"unknown license type: {type(value).__name__}")


def _messages(value) -> list[dict]:
    if not value:
        return []
    if not isinstance(value, (list, tuple)) or not all(isinstance(m, dict) for m in value):
        raise InvalidArgument("messages must be a list of {role, content} objects")
    return [{"role": str(m.get("role") or ""), "content": str(m.get("content") or "")} for m in value]


def _valid_path(path: str) -> bool:
    """Go's fs.ValidPath: an unrooted slash path without empty, '.' or '..' elements (or just '.')."""
    return path == "." or all(part not in ("", ".", "..") for part in path.split("/"))


def _check_paths(files) -> None:
    if not isinstance(files, dict):
        raise InvalidArgument("files must be an object of file names to digests")
    for path in files:
        if not isinstance(path, str) or not _valid_path(path):
            raise InvalidArgument("file path must be relative")


def _gguf_sources(store: "ModelStore", files: dict, adapter: bool) -> list[_Source]:
    """Parses uploaded GGUFs, in file-name order (maps have none), model layers first."""
    from corral.store.gguf_info import is_gguf, read_gguf

    digests = {path: parse_digest(files[path] if isinstance(files[path], str) else "") for path in sorted(files)}
    if not any(p.endswith(".gguf") or is_gguf(store.blobs.path(d)) for p, d in digests.items()):
        raise InvalidArgument("unknown type")  # the first file ending .gguf or with GGUF magic decides
    if adapter and len(digests) > 1:
        raise InvalidArgument("only one adapter is currently supported")
    sources = []
    for digest in digests.values():
        path = store.blobs.path(digest)
        if not path.is_file():
            raise Internal(f"open {path}: no such file or directory")
        info = read_gguf(path)  # InvalidArgument("supplied file was not in GGUF format") for other data
        sources.append(_Source(digest, _media_type(info), path.stat().st_size, info))
    return sorted(sources, key=lambda s: _LAYER_RANK.index(s.media_type))


def _media_type(info) -> str:
    """A GGUF's layer type from general.type: adapter, projector (also mmproj, clip, vision-only)."""
    kind, arch = (info.general_type or "").lower(), info.architecture
    if kind == "adapter":
        return MEDIA_TYPE_ADAPTER
    vision_only = not info.kv.get(f"{arch}.block_count") and info.kv.get(f"{arch}.vision.block_count")
    if kind in ("projector", "mmproj") or arch == "clip" or vision_only:
        return MEDIA_TYPE_PROJECTOR
    return MEDIA_TYPE_MODEL


# -- the work ---------------------------------------------------------------------------------------


class _Layers:
    """The layer list being built, with each layer's status line and the digests it replaced."""

    def __init__(self, store: "ModelStore", stack: ExitStack):
        self.store, self.stack = store, stack
        self.entries: list[tuple[Layer, str]] = []
        self.removed: list[str] = []

    def pin(self, digests: list[str]) -> None:
        self.stack.enter_context(self.store.pinned(digests))

    def append(self, layer: Layer, created: bool) -> None:
        status = "creating new layer" if created else "using existing layer"
        self.entries.append((layer, f"{status} {layer.digest}"))

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


def _run(store: "ModelStore", plan: _Plan, pull) -> Iterator[dict]:
    with ExitStack() as stack:
        layers = _Layers(store, stack)
        config: dict = {}
        if plan.needs_pull:
            yield from pull(plan.from_name)
            if not store.manifests.exists(plan.from_name):
                raise NotFound(PULL_MISSING)
        if plan.from_name is not None:
            config = _inherit(store, plan.from_name, layers)
            if plan.needs_pull:
                _check_adapters(store, plan, layers.of_type(MEDIA_TYPE_MODEL))
        if plan.conversion is not None:
            yield from _convert(store, plan, layers)
        for source in plan.sources:
            yield {"status": "parsing GGUF"}
            layers.pin([source.digest])
            if not store.blobs.has(source.digest):
                raise Internal(f"open {store.blobs.path(source.digest)}: no such file or directory")
            layers.append(Layer(source.media_type, source.digest, source.size), created=False)
        if plan.quantize:
            yield from _quantize(store, plan.quantize, layers)
        gguf_config = _gguf_config(store, layers)
        _text_layers(store, plan, layers)
        config_layer = _config_layer(layers, {**gguf_config, **config})
        for _, status in layers.entries:
            yield {"status": status}
        old = _old_digests(store, plan.name)
        yield {"status": "writing manifest"}
        store.manifests.write(plan.name, Manifest(config_layer, [layer for layer, _ in layers.entries]))
        store.prune(layers.removed + ([] if noprune() else old))
    yield {"status": "success"}


def _convert(store: "ModelStore", plan: _Plan, layers: _Layers) -> Iterator[dict]:
    """Finishes the conversion started during validation; its GGUF becomes the model layer."""
    try:
        if plan.conversion_first is not None:
            yield plan.conversion_first
        yield from plan.conversion
    except BaseException:
        plan.conversion.close()
        plan.conversion_out.unlink(missing_ok=True)
        raise
    digest, created = store.blobs.import_file(plan.conversion_out)
    layers.pin([digest])
    if not store.blobs.has(digest):
        raise Internal(f"blob {digest} was removed while creating the model")
    layers.append(Layer(MEDIA_TYPE_MODEL, digest, store.blobs.size(digest)), created=created)
    _check_adapters(store, plan, layers.of_type(MEDIA_TYPE_MODEL))
    if plan.quantize:
        _check_quantizable(store, store.gguf(digest).file_type, plan.quantize)


def _inherit(store: "ModelStore", from_name: Name, layers: _Layers) -> dict:
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


def _quantize(store: "ModelStore", wanted: str, layers: _Layers) -> Iterator[dict]:
    for i, (layer, _) in enumerate(layers.entries):
        if layer.media_type != MEDIA_TYPE_MODEL:
            continue
        source_type = store.gguf(layer.digest).file_type
        _check_quantizable(store, source_type, wanted)
        if source_type == wanted:
            continue
        hook, source = store.quantize_hook, store.blobs.path(layer.digest)
        if inspect.isgeneratorfunction(hook) or inspect.isgeneratorfunction(getattr(hook, "__call__", None)):
            new_path = yield from hook(source, wanted)  # its own progress lines, then `return path`
        else:
            yield {"status": f"quantizing {source_type} model to {wanted}"}
            new_path = hook(source, wanted)
            if isinstance(new_path, abc.Iterator):
                new_path = yield from new_path
            yield {"status": "verifying conversion"}
        digest, created = store.blobs.import_file(new_path)
        layers.pin([digest])
        if not store.blobs.has(digest):
            raise Internal(f"blob {digest} was removed while creating the model")
        new = Layer(MEDIA_TYPE_MODEL, digest, store.blobs.size(digest))
        status = "creating new layer" if created else "using existing layer"
        layers.entries[i] = (new, f"{status} {digest}")


def _gguf_config(store: "ModelStore", layers: _Layers) -> dict:
    """Format, family, families, parameter size and file type from the GGUF layers, first one winning."""
    from corral.store.gguf_info import human_parameter_count

    config = {"model_format": "", "model_family": "", "model_families": None, "model_type": "", "file_type": ""}
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


def _text_layers(store: "ModelStore", plan: _Plan, layers: _Layers) -> None:
    if plan.template:
        layers.drop(TEMPLATE_MEDIA_TYPES)
        layers.add_blob(plan.template.encode("utf-8"), MEDIA_TYPE_TEMPLATE)
    if plan.system:
        layers.drop((MEDIA_TYPE_SYSTEM,))
        layers.add_blob(plan.system.encode("utf-8"), MEDIA_TYPE_SYSTEM)
    for text in plan.licenses:
        layers.add_blob(text.encode("utf-8"), MEDIA_TYPE_LICENSE)
    merged = dict(plan.parameters)
    for layer in layers.of_type(MEDIA_TYPE_PARAMS):
        for key, value in store.read_layer_json(layer, dict).items():
            merged.setdefault(key, value)
    if merged:
        layers.drop((MEDIA_TYPE_PARAMS,))
        layers.add_blob(go_json(merged, sort_keys=True), MEDIA_TYPE_PARAMS)
    if plan.messages:
        layers.drop((MEDIA_TYPE_MESSAGES,))
        layers.add_blob(go_json(plan.messages), MEDIA_TYPE_MESSAGES)


def _config_layer(layers: _Layers, config: dict) -> Layer:
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


def _old_digests(store: "ModelStore", name: Name) -> list[str]:
    """The blobs of the manifest about to be overwritten (none if there is none)."""
    try:
        raw, _ = store.manifests.read_raw(name)
    except NotFound:
        return []
    try:
        return Manifest.from_bytes(raw).all_digests()
    except ValueError:
        return sorted(find_digests(raw))
