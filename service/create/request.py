"""Reading a create request: its text fields, the uploaded GGUFs it names, the legacy Modelfile.

Why apart from the Creator: these checks need nothing but the request and the blobs it names, and each
answers with Ollama's exact error text before the first progress line.
"""

from __future__ import annotations

from dataclasses import dataclass

from corral.store.digests import parse_digest
from corral.store.errors import Internal, InvalidArgument
from corral.store.gguf_info import GGUFInfo, is_gguf, read_gguf
from corral.store.manifests import MEDIA_TYPE_ADAPTER, MEDIA_TYPE_MODEL, MEDIA_TYPE_PROJECTOR
from corral.store.modelfile import modelfile_to_create, parse_modelfile
from corral.store.models import ModelStore

_LAYER_RANK = (MEDIA_TYPE_MODEL, MEDIA_TYPE_PROJECTOR, MEDIA_TYPE_ADAPTER)


@dataclass
class Source:
    """An uploaded GGUF blob named in `files` or `adapters`, parsed during validation."""

    digest: str
    media_type: str
    size: int
    info: GGUFInfo


def with_modelfile(req: dict) -> dict:
    """Legacy create: a `modelfile` is used only when neither `from` nor `files` is given."""
    if req.get("from") or req.get("files") is not None or not req.get("modelfile"):
        return req
    converted = modelfile_to_create(parse_modelfile(req["modelfile"]), None)
    merged = dict(req)
    for key, value in converted.items():
        if merged.get(key) in (None, "", [], {}):
            merged[key] = value
    return merged


def text(req: dict, key: str) -> str:
    value = req.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidArgument(f"{key} must be a string")
    return value


def licenses(value) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return [v for v in value if v]
    raise InvalidArgument(f"unknown license type: {type(value).__name__}")


def messages(value) -> list[dict]:
    if not value:
        return []
    if not isinstance(value, (list, tuple)) or not all(isinstance(m, dict) for m in value):
        raise InvalidArgument("messages must be a list of {role, content} objects")
    return [{"role": str(m.get("role") or ""), "content": str(m.get("content") or "")} for m in value]


def _valid_path(path: str) -> bool:
    """Go's fs.ValidPath: an unrooted slash path without empty, '.' or '..' elements (or just '.')."""
    return path == "." or all(part not in ("", ".", "..") for part in path.split("/"))


def check_paths(files) -> None:
    if not isinstance(files, dict):
        raise InvalidArgument("files must be an object of file names to digests")
    for path in files:
        if not isinstance(path, str) or not _valid_path(path):
            raise InvalidArgument("file path must be relative")


def blob_paths(store: ModelStore, files: dict) -> dict:
    """{relative name: blob path} of the uploaded files (a safetensors folder for the converter)."""
    return {name: store.blobs.path(parse_digest(d if isinstance(d, str) else "")) for name, d in files.items()}


def gguf_sources(store: ModelStore, files: dict, adapter: bool) -> list[Source]:
    """Parses uploaded GGUFs, in file-name order (maps have none), model layers first."""
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
        sources.append(Source(digest, _media_type(info), path.stat().st_size, info))
    return sorted(sources, key=lambda s: _LAYER_RANK.index(s.media_type))


def _media_type(info: GGUFInfo) -> str:
    """A GGUF's layer type from general.type: adapter, projector (also mmproj, clip, vision-only)."""
    kind, arch = (info.general_type or "").lower(), info.architecture
    if kind == "adapter":
        return MEDIA_TYPE_ADAPTER
    vision_only = not info.kv.get(f"{arch}.block_count") and info.kv.get(f"{arch}.vision.block_count")
    if kind in ("projector", "mmproj") or arch == "clip" or vision_only:
        return MEDIA_TYPE_PROJECTOR
    return MEDIA_TYPE_MODEL
