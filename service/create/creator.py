"""/api/create (spec §5): build a manifest from an existing model, uploaded GGUF blobs or a safetensors folder.

Why a service orchestration and not part of the store: creating a model needs the template parser, the
quantizer (llama.cpp in a child process), the safetensors converter, the adapter checks and the registry
(a missing `from` model is pulled first). The Creator gets each of them in its constructor, so what a
create does never depends on what happened to be installed; the store below only stores.

Why two phases: the request is validated and every GGUF is parsed *before* the first progress line, so a
bad request gets a real error status (400/404) instead of an error buried in a 200 stream. The returned
generator then does the work and yields Ollama's exact lines:

    pulling ...                          only when `from` is not local: the pull's own lines
    converting model                     only for safetensors, with the converter's progress
    parsing GGUF                         per uploaded GGUF (files, then adapters)
    quantizing F16 model to Q4_K_M       only when quantizing (the quantizer's lines), then
    verifying conversion
    using existing layer sha256:<hex>    per final layer whose blob already existed (inherited, uploaded,
    creating new layer sha256:<hex>      or identical content); else "creating new layer"
    writing manifest
    success

Inherited layers get `from` = the base model's display name (layer order and blob bytes: layers.py).
Replaced layers and, unless OLLAMA_NOPRUNE, the overwritten manifest's blobs are pruned at the end.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Generator, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from corral.service.convert.quantize import SOURCE_TYPES
from corral.service.create import request
from corral.service.create.layers import Layers, config_layer, gguf_config, inherit, old_digests, text_layers
from corral.store.blobs import TempBlob
from corral.store.errors import (
    NO_SPACE,
    Cancelled,
    CorralError,
    Internal,
    InvalidArgument,
    NotFound,
    is_disk_full,
    no_space,
)
from corral.store.gocompat import go_json
from corral.store.manifests import (
    MEDIA_TYPE_ADAPTER,
    MEDIA_TYPE_MODEL,
    MEDIA_TYPE_PARAMS,
    MEDIA_TYPE_TEMPLATE,
    Layer,
    Manifest,
)
from corral.store.models import ModelStore
from corral.store.names import Name, require_name
from corral.store.prune import noprune

NEITHER = "neither 'from' or 'files' was specified"
PULL_MISSING = "pull model manifest: file does not exist"
ONLY_FLOAT_SOURCES = "quantization is only supported for F16, BF16 and F32 models"
FULL_BYTES = 1 << 20  # a failed quantizer or converter on a filesystem with less free than this: disk full

# A converter or quantizer writes a GGUF at the path it is given (a temp file in blobs/, so the result is
# renamed into place rather than copied), yielding progress lines; request errors come before the first.
Progress = Generator[dict, None, None]
Convert = Callable[[dict, Path, threading.Event], Progress]  # ({relative name: blob path}, out, cancel)
Quantize = Callable[[Path, Path, str, threading.Event], Progress]  # (source, out, type name, cancel)
Pull = Callable[[str, bool, threading.Event], Iterator[dict]]  # (full model name, insecure, cancel)


@dataclass
class _Conversion:
    """A safetensors conversion started during validation, its first line taken (request errors come
    before it), writing the GGUF at `out`."""

    stream: Progress
    first: dict | None
    out: TempBlob


@dataclass
class _Plan:
    """A validated request: what the stream will do."""

    name: Name
    cancel: threading.Event
    insecure: bool = False
    from_name: Name | None = None
    needs_pull: bool = False
    sources: list[request.Source] = field(default_factory=list)
    template: str = ""
    system: str = ""
    licenses: list[str] = field(default_factory=list)
    parameters: dict = field(default_factory=dict)
    messages: list[dict] = field(default_factory=list)
    quantize: str = ""
    conversion: _Conversion | None = None


@dataclass(frozen=True)
class Creator:
    """Runs creates against one store with the collaborators `corral serve` gives it (see build_creator).

    validate_template(text) raises InvalidArgument("template error: ...") for a template that does not
    parse; normalize_quant_type(text) returns the canonical type name or raises InvalidArgument;
    validate_adapter(base_gguf, adapter_gguf) raises InvalidArgument for an adapter that would crash
    llama.cpp; convert, quantize and pull are generators as typed above.
    """

    store: ModelStore
    validate_template: Callable[[str], None]
    normalize_quant_type: Callable[[str], str]
    quantize: Quantize
    convert: Convert
    validate_adapter: Callable[[Path, Path], None]
    pull: Pull
    # Template autodetection: a GGUF's Jinja chat template -> (family name, Go template, parameters), or
    # None when no known family matches (service/prompt/known). None: no detection.
    detect_template: Callable[[str], tuple[str, str, dict] | None] | None = None

    def create(self, req: dict, cancel: threading.Event | None = None) -> Iterator[dict]:
        """Validates `req` (Ollama's JSON create request, plus `insecure` for the pull of a missing base)
        now, raising before any line, and returns the progress stream. `cancel` stops a pull, conversion
        or quantization in progress when the client goes away."""
        plan = self._validate(req, cancel if cancel is not None else threading.Event())
        return self._run(plan)

    # -- validation ---------------------------------------------------------------------------------

    def _validate(self, req: dict, cancel: threading.Event) -> _Plan:
        plan = _Plan(self.store.manifests.resolve(require_name(req.get("model") or req.get("name") or "")), cancel,
                     insecure=bool(req.get("insecure")))
        try:
            self._read_request(req, plan)
        except BaseException:
            if plan.conversion is not None:  # started, then the request was refused: stop it now
                plan.conversion.stream.close()
                plan.conversion.out.close()
            raise
        return plan

    def _read_request(self, req: dict, plan: _Plan) -> None:
        store = self.store
        req = request.with_modelfile(req)
        quantize = req.get("quantize") or req.get("quantization") or ""
        plan.quantize = self.normalize_quant_type(str(quantize)) if quantize else ""
        plan.template, plan.system = request.text(req, "template"), request.text(req, "system")
        if plan.template:
            self.validate_template(plan.template)
        plan.licenses = request.licenses(req.get("license"))
        if not isinstance(req.get("parameters") or {}, dict):
            raise InvalidArgument("parameters must be an object")
        plan.parameters = dict(req.get("parameters") or {})
        plan.messages = request.messages(req.get("messages"))
        files = req.get("files")
        if files is not None:
            request.check_paths(files)
        if req.get("from"):
            plan.from_name = store.manifests.resolve(require_name(str(req["from"])))
            plan.needs_pull = not store.manifests.exists(plan.from_name)
        elif files is not None and any(path.endswith(".safetensors") for path in files):
            self._start_conversion(plan, files)
        elif files is not None:
            plan.sources = request.gguf_sources(store, files, adapter=False)
        else:
            raise InvalidArgument(NEITHER)
        if req.get("adapters") is not None:
            request.check_paths(req["adapters"])
            plan.sources += request.gguf_sources(store, req["adapters"], adapter=True)
        if plan.quantize:
            for source in plan.sources:
                if source.media_type == MEDIA_TYPE_MODEL:
                    _check_quantizable(source.info.file_type)
        if not plan.needs_pull and plan.conversion is None:
            self._check_adapters(plan, [])

    def _start_conversion(self, plan: _Plan, files: dict) -> None:
        """Starts the safetensors conversion now, so its request errors (unsupported architecture, missing
        config) answer with a status before the stream; its first line is kept for the stream."""
        out = self.store.blobs.temp()  # locked until the blob is made: no sweep removes it meanwhile
        stream = self.convert(request.blob_paths(self.store, files), out.path, plan.cancel)
        try:
            first = next(stream, None)
        except BaseException:
            stream.close()
            out.close()
            raise
        plan.conversion = _Conversion(stream, first, out)

    def _check_adapters(self, plan: _Plan, inherited: list[Layer]) -> None:
        """An adapter that does not fit its base makes llama.cpp crash at the first decode: refuse it here."""
        adapters = [s for s in plan.sources if s.media_type == MEDIA_TYPE_ADAPTER]
        if not adapters:
            return
        base = self._model_path(plan, inherited)
        if base is None:
            raise InvalidArgument("invalid adapter: the model has no base weights to apply it to")
        for adapter in adapters:
            self.validate_adapter(base, self.store.blobs.path(adapter.digest))

    def _model_path(self, plan: _Plan, inherited: list[Layer]) -> Path | None:
        for source in plan.sources:
            if source.media_type == MEDIA_TYPE_MODEL:
                return self.store.blobs.path(source.digest)
        if plan.from_name is not None and not inherited:
            manifest, _, _ = self.store.manifests.read(plan.from_name)
            inherited = manifest.layers
        for layer in inherited:
            if layer.media_type == MEDIA_TYPE_MODEL:
                return self.store.blobs.path(layer.digest)
        return None

    # -- the work -----------------------------------------------------------------------------------

    def _run(self, plan: _Plan) -> Iterator[dict]:
        store = self.store
        with ExitStack() as stack:
            layers = Layers(store, stack)
            config: dict = {}
            if plan.from_name is not None:
                if plan.needs_pull:
                    yield from self.pull(plan.from_name.full, plan.insecure, plan.cancel)
                    if not store.manifests.exists(plan.from_name):
                        raise NotFound(PULL_MISSING)
                config = inherit(store, plan.from_name, layers)
                if plan.needs_pull:
                    self._check_adapters(plan, layers.of_type(MEDIA_TYPE_MODEL))
            if plan.conversion is not None:
                yield from self._convert(plan, plan.conversion, layers)
            for source in plan.sources:
                yield {"status": "parsing GGUF"}
                layers.pin([source.digest])
                if not store.blobs.has(source.digest):
                    raise Internal(f"open {store.blobs.path(source.digest)}: no such file or directory")
                layers.append(Layer(source.media_type, source.digest, source.size), created=False)
            if plan.quantize:
                yield from self._quantize(plan, layers)
            if plan.from_name is None and not plan.template:
                self._detect_template(layers)
            from_ggufs = gguf_config(store, layers)
            text_layers(store, layers, plan.template, plan.system, plan.licenses, plan.parameters, plan.messages)
            config_blob = config_layer(layers, {**from_ggufs, **config})
            for _, status in layers.entries:
                yield {"status": status}
            old = old_digests(store, plan.name)
            yield {"status": "writing manifest"}
            store.manifests.write(plan.name, Manifest(config_blob, [layer for layer, _ in layers.entries]))
            store.prune(layers.removed + ([] if noprune() else old))
        yield {"status": "success"}

    def _detect_template(self, layers: Layers) -> None:
        """Ollama's template autodetection for a model made from files without a TEMPLATE: the first model
        GGUF whose `tokenizer.chat_template` matches a known family adds that family's Go template (status
        "using autodetected template <name>") and a params layer with its stop strings, which the
        request's parameters are then merged over. An unknown template adds nothing: chat renders the
        GGUF's own Jinja template."""
        if self.detect_template is None or layers.of_type(MEDIA_TYPE_TEMPLATE):
            return
        for model in layers.of_type(MEDIA_TYPE_MODEL):
            jinja = self.store.gguf(model.digest).chat_template
            found = self.detect_template(jinja) if jinja else None
            if found is None:
                continue
            name, text, parameters = found
            layer, _ = layers.write(text.encode("utf-8"), MEDIA_TYPE_TEMPLATE)
            layers.entries.append((layer, f"using autodetected template {name}"))
            if parameters:
                layers.add_blob(go_json(parameters), MEDIA_TYPE_PARAMS)
            return

    def _convert(self, plan: _Plan, conversion: _Conversion, layers: Layers) -> Iterator[dict]:
        """Finishes the conversion started during validation; its GGUF becomes the model layer."""
        with conversion.out, _disk_full_as_no_space(conversion.out):
            try:
                if conversion.first is not None:
                    yield conversion.first
                yield from conversion.stream
            except BaseException:
                conversion.stream.close()
                raise
            digest, created = self.store.blobs.import_file(conversion.out.path)
        layers.append(layers.imported(MEDIA_TYPE_MODEL, digest, created), created=created)
        self._check_adapters(plan, layers.of_type(MEDIA_TYPE_MODEL))
        if plan.quantize:
            _check_quantizable(self.store.gguf(digest).file_type)

    def _quantize(self, plan: _Plan, layers: Layers) -> Iterator[dict]:
        for i, (layer, _) in enumerate(layers.entries):
            if layer.media_type != MEDIA_TYPE_MODEL:
                continue
            source_type = self.store.gguf(layer.digest).file_type
            _check_quantizable(source_type)
            if source_type == plan.quantize:
                continue
            with self.store.blobs.temp() as out, _disk_full_as_no_space(out):
                yield from self.quantize(self.store.blobs.path(layer.digest), out.path, plan.quantize, plan.cancel)
                digest, created = self.store.blobs.import_file(out.path)
            new = layers.imported(MEDIA_TYPE_MODEL, digest, created)
            status = "creating new layer" if created else "using existing layer"
            layers.entries[i] = (new, f"{status} {digest}")


@contextmanager
def _disk_full_as_no_space(out: TempBlob) -> Iterator[None]:
    """A quantizer or converter that failed writing `out` on a full disk: Go's "no space left" error.

    llama.cpp's quantizer reports a failed write only as an iostream error, so a failure is judged by the
    disk: while we hold `out` open its blocks stay allocated, and a filesystem left with less than
    FULL_BYTES free is what made it fail."""
    try:
        yield
    except CorralError as exc:
        if isinstance(exc, Cancelled) or NO_SPACE in exc.message or not _nearly_full(out):
            raise
        raise no_space(out.path) from exc
    except OSError as exc:
        if is_disk_full(exc):
            raise no_space(out.path) from exc
        raise


def _nearly_full(out: TempBlob) -> bool:
    try:
        fs = os.fstatvfs(out.fd)
    except (OSError, ValueError):
        return False
    return fs.f_bavail * fs.f_frsize < FULL_BYTES


def _check_quantizable(file_type: str) -> None:
    if file_type not in SOURCE_TYPES:
        raise Internal(ONLY_FLOAT_SOURCES)
