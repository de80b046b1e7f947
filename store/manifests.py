"""Manifests: the Docker schema-2 JSON that names a model's layers (spec §4), one file per tag (spec §3).

Why: a model *is* its manifest: list, show, copy, delete, create, pull and push all start here. Manifests
we write are compact Go-style JSON plus '\\n' with keys in Ollama's order, so their bytes (and so the
model digest that tags and ps report) match what Ollama would write. Pulled manifests are stored as the
registry's exact bytes; `write` takes raw bytes for that.

Writes are atomic (temp file beside the manifest, fsync, rename, fsync the directory): a crash leaves
either the old manifest or the new one, never a torn file that would make every listing skip the model,
and at worst a `.tmp-` file that the next start-up sweep removes (store/prune.py).
Names are matched ignoring case, part by part, against what is on disk (`resolve`), so `Llama3.2:LATEST`
finds `llama3.2:latest` and a create onto a case variant overwrites it instead of adding a twin.
"""

from __future__ import annotations

import builtins
import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from corral.store.blobs import fsync_dir
from corral.store.errors import Internal, NotFound, is_disk_full, no_space
from corral.store.gocompat import go_json
from corral.store.locks import create_locked
from corral.store.names import Name, name_from_parts
from corral.store.paths import DIR_MODE, FILE_MODE, StorePaths

log = logging.getLogger(__name__)

MEDIA_TYPE_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MEDIA_TYPE_CONFIG = "application/vnd.docker.container.image.v1+json"
_OLLAMA = "application/vnd.ollama.image."
MEDIA_TYPE_MODEL = _OLLAMA + "model"
MEDIA_TYPE_ADAPTER = _OLLAMA + "adapter"
MEDIA_TYPE_PROJECTOR = _OLLAMA + "projector"
MEDIA_TYPE_TEMPLATE = _OLLAMA + "template"
MEDIA_TYPE_PROMPT = _OLLAMA + "prompt"  # the legacy name of template, still read
MEDIA_TYPE_SYSTEM = _OLLAMA + "system"
MEDIA_TYPE_PARAMS = _OLLAMA + "params"
MEDIA_TYPE_MESSAGES = _OLLAMA + "messages"
MEDIA_TYPE_LICENSE = _OLLAMA + "license"
MEDIA_TYPE_EMBED = _OLLAMA + "embed"  # obsolete, ignored
MEDIA_TYPE_TENSOR = _OLLAMA + "tensor"  # safetensors/MLX models: one tensor per layer, with `name`

GGUF_MEDIA_TYPES = (MEDIA_TYPE_MODEL, MEDIA_TYPE_ADAPTER, MEDIA_TYPE_PROJECTOR)
TEMPLATE_MEDIA_TYPES = (MEDIA_TYPE_TEMPLATE, MEDIA_TYPE_PROMPT)


@dataclass
class Layer:
    media_type: str
    digest: str
    size: int
    from_: str | None = None
    name: str | None = None

    def to_dict(self) -> dict:
        out: dict = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.from_:
            out["from"] = self.from_
        if self.name:
            out["name"] = self.name
        return out

    @classmethod
    def from_dict(cls, data: object) -> Layer:
        if not isinstance(data, dict) or not isinstance(data.get("digest"), str):
            raise ValueError("layer without a digest")
        size = data.get("size", 0)
        if not isinstance(size, int) or isinstance(size, bool):
            raise ValueError("layer size is not an integer")
        return cls(str(data.get("mediaType") or ""), data["digest"], size,
                   data.get("from") or None, data.get("name") or None)


@dataclass
class Manifest:
    config: Layer
    layers: list[Layer] = field(default_factory=list)
    schema_version: int = 2
    media_type: str = MEDIA_TYPE_MANIFEST

    def to_dict(self) -> dict:
        return {"schemaVersion": self.schema_version, "mediaType": self.media_type,
                "config": self.config.to_dict(), "layers": [layer.to_dict() for layer in self.layers]}

    def to_bytes(self) -> bytes:
        """Compact JSON plus '\\n', keys in Ollama's order (schemaVersion, mediaType, config, layers)."""
        return go_json(self.to_dict())

    @classmethod
    def from_bytes(cls, data: bytes) -> Manifest:
        """Parses a manifest; ValueError if it is not one."""
        try:
            doc = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ValueError(f"invalid manifest JSON: {err}") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("layers", []), list):
            raise ValueError("manifest is not a JSON object with a layer list")
        return cls(
            config=Layer.from_dict(doc.get("config")),
            layers=[Layer.from_dict(item) for item in doc.get("layers") or []],
            schema_version=doc.get("schemaVersion", 2),
            media_type=doc.get("mediaType", MEDIA_TYPE_MANIFEST),
        )

    def all_digests(self) -> list[str]:
        """Every blob the manifest references: the layers, then the config."""
        return [layer.digest for layer in self.layers] + [self.config.digest]

    @property
    def size(self) -> int:
        """What /api/tags reports: layer sizes plus the config size, from the manifest alone."""
        return sum(layer.size for layer in self.layers) + self.config.size

    def first(self, *media_types: str) -> Layer | None:
        return next((layer for layer in self.layers if layer.media_type in media_types), None)


class ManifestStore:
    """The manifests/ tree of one store."""

    def __init__(self, paths: StorePaths):
        self.paths = paths
        self._names: dict[tuple[str, ...], Name | None] = {}  # path parts -> parsed name (or invalid)

    def resolve(self, name: Name) -> Name:
        """Canonicalises the case of each part against what exists on disk, host to tag.

        A part with an exact match stays as given; otherwise the first directory (or, for the tag, file)
        equal to it ignoring case is used; parts below the first part with no match stay as given."""
        if not name.is_valid():
            return name
        parts = list(name.parts)
        current = self.paths.manifests_dir
        for i, part in enumerate(parts):
            want_dir = i < 3
            exact = current / part
            if exact.is_dir() if want_dir else exact.is_file():
                current = exact
                continue
            try:
                entries = sorted(os.scandir(current), key=lambda e: e.name)
            except (FileNotFoundError, NotADirectoryError):
                break
            folded = part.lower()
            match = next((e.name for e in entries if e.name.lower() == folded
                          and (e.is_dir() if want_dir else e.is_file())), None)
            if match is None:
                break
            parts[i] = match
            current = current / match
        return name.with_parts(*parts)

    def name_of(self, parts: tuple[str, ...]) -> Name | None:
        """The name of the manifest at manifests/<parts>, None if invalid (parsing is cached: it costs more
        than a directory walk)."""
        name = self._names.get(parts, False)
        if name is False:
            name = self._names[parts] = name_from_parts(parts)
        return name  # type: ignore[return-value]

    def exists(self, name: Name) -> bool:
        return name.is_valid() and self.paths.manifest(name).is_file()

    def read_raw(self, name: Name) -> tuple[bytes, int]:
        """(bytes, mtime_ns) of a manifest; NotFound if missing."""
        path = self.paths.manifest(name)
        try:
            with open(path, "rb") as f:
                return f.read(), os.fstat(f.fileno()).st_mtime_ns
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise NotFound(f"model '{name.display}' not found") from None

    def read_stat(self, name: Name) -> tuple[bytes, os.stat_result]:
        """(bytes, stat) of a manifest, the stat taken before reading; NotFound if missing."""
        path = self.paths.manifest(name)
        try:
            with open(path, "rb") as f:
                st = os.fstat(f.fileno())
                return f.read(), st
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise NotFound(f"model '{name.display}' not found") from None

    def read(self, name: Name) -> tuple[Manifest, bytes, int]:
        """(Manifest, raw bytes, mtime_ns); NotFound if missing, Internal if it does not parse."""
        raw, mtime_ns = self.read_raw(name)
        try:
            return Manifest.from_bytes(raw), raw, mtime_ns
        except ValueError as err:
            raise Internal(f"{name.full}: {err}") from None

    def digest(self, name: Name) -> str:
        """Lowercase hex SHA-256 of the manifest bytes, no prefix: the model digest of tags and ps."""
        return hashlib.sha256(self.read_raw(name)[0]).hexdigest()

    def write(self, name: Name, data: bytes | Manifest) -> None:
        """Atomically creates or replaces a manifest (raw registry bytes, or a Manifest we built). The temp
        file is held under an flock until it is renamed (store/locks.py), so a start-up sweep of another
        server never removes it; a full disk raises ResourceExhausted with Go's "no space left" text."""
        raw = data.to_bytes() if isinstance(data, Manifest) else bytes(data)
        path = self.paths.manifest(name)
        for attempt in range(10):  # a concurrent delete may prune the new directory before we use it
            try:
                path.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
                fd, tmp = create_locked(lambda: self.paths.temp_manifest(name), FILE_MODE)
            except (FileNotFoundError, FileExistsError):  # a racing delete removed a folder mid-mkdir
                if attempt == 9:
                    raise
                continue
            except OSError as err:
                if is_disk_full(err):
                    raise no_space(path.parent) from err
                raise
            try:
                os.fchmod(fd, FILE_MODE)
                view = memoryview(raw)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
                os.replace(tmp, path)
            except OSError as err:
                if is_disk_full(err):
                    raise no_space(tmp) from err
                raise
            finally:
                tmp.unlink(missing_ok=True)
                os.close(fd)
            try:
                fsync_dir(path.parent)
            except FileNotFoundError:  # another server deleted the new manifest and its folder since
                pass
            return

    def delete(self, name: Name) -> None:
        """Removes a manifest and then its directories as far up as they are empty; NotFound if missing."""
        path = self.paths.manifest(name)
        try:
            path.unlink()
        except (FileNotFoundError, IsADirectoryError):
            raise NotFound(f"model '{name.display}' not found") from None
        try:
            fsync_dir(path.parent)
        except FileNotFoundError:  # a concurrent delete already removed the emptied folder
            pass
        parent = path.parent
        while parent != self.paths.manifests_dir:
            try:
                parent.rmdir()
            except OSError:  # not empty (or already gone)
                break
            parent = parent.parent

    def prune_empty_dirs(self) -> None:
        """Removes every empty directory below manifests/ (bottom-up), as Ollama's PruneDirectory."""
        for dirpath, _dirs, _files in os.walk(self.paths.manifests_dir, topdown=False):
            if Path(dirpath) != self.paths.manifests_dir:
                try:
                    os.rmdir(dirpath)
                except OSError:
                    pass

    def list(self) -> builtins.list[tuple[Name, Path]]:  # the method shadows the builtin in this class
        """Every manifest file exactly four levels deep whose path is a valid name, sorted by path.
        Other files at that depth are skipped with a warning (our own '.tmp-' files silently)."""
        return [(name, Path(entry.path)) for name, entry in self.entries()]

    def entries(self) -> builtins.list[tuple[Name, os.DirEntry]]:
        """Like list(), with the directory entries themselves (their path strings and a cheap stat):
        /api/tags walks every manifest per request, and building Path objects dominated its cost."""
        found: list[tuple[Name, os.DirEntry]] = []

        def walk(directory: str, parts: tuple[str, ...]) -> None:
            try:
                with os.scandir(directory) as it:
                    entries = sorted(it, key=lambda e: e.name)
            except (FileNotFoundError, NotADirectoryError):
                return
            for entry in entries:
                if len(parts) < 3:
                    if entry.is_dir():
                        walk(entry.path, (*parts, entry.name))
                    continue
                if not entry.is_file() or entry.name.startswith(".tmp-"):
                    continue
                name = self.name_of((*parts, entry.name))
                if name is None:
                    log.warning("skipping manifest with an invalid name: %s", entry.path)
                    continue
                found.append((name, entry))

        walk(str(self.paths.manifests_dir), ())
        return found
