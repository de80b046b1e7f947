"""Fixtures and helpers shared by the store tests: a ModelStore on tmp_path and tiny GGUF models in it.

Why: every store test needs a real store with real blobs; the GGUF files come from the shared builders in
tests/gguf_models.py (seeded, so digests are stable), are written into tmp_path and stored with
BlobStore.write exactly as an upload would store them. Models are made by the Creator that `corral serve`
builds (service/create), without a registry to pull from.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import gguf
import numpy as np
import pytest

from corral.service.create import build_creator
from corral.store.errors import NotFound
from corral.store.models import ModelStore
from tests.gguf_models import write_bert_gguf, write_llama_gguf, write_lora_gguf


@pytest.fixture
def store(tmp_path, monkeypatch) -> ModelStore:
    monkeypatch.delenv("OLLAMA_NOPRUNE", raising=False)
    return ModelStore(tmp_path / "models")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def upload(store: ModelStore, path: Path) -> str:
    """Stores a file as a blob the way /api/blobs does; returns its digest."""
    digest, _ = store.blobs.write([path.read_bytes()])
    return digest


def write_projector_gguf(path: Path, seed: int = 0) -> Path:
    """A tiny clip projector (general.type projector), enough for layer typing and show."""
    rng = np.random.default_rng(seed)
    w = gguf.GGUFWriter(str(path), "clip")
    w.add_type("projector")
    w.add_name("tiny-mmproj")
    w.add_file_type(0)
    w.add_uint32("clip.vision.block_count", 1)
    w.add_uint32("clip.vision.embedding_length", 16)
    w.add_tensor("mm.0.weight", rng.standard_normal((16, 16)).astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def llama_blob(store: ModelStore, tmp_path: Path, **kwargs) -> str:
    path = tmp_path / f"llama-{sha256_hex(repr(sorted(kwargs.items())).encode())[:8]}.gguf"
    if not path.exists():
        write_llama_gguf(path, **kwargs)
    return upload(store, path)


def bert_blob(store: ModelStore, tmp_path: Path) -> str:
    path = tmp_path / "bert.gguf"
    if not path.exists():
        write_bert_gguf(path)
    return upload(store, path)


def lora_blob(store: ModelStore, tmp_path: Path, seed: int = 0) -> str:
    path = tmp_path / f"lora-{seed}.gguf"
    if not path.exists():
        write_lora_gguf(path, seed=seed)
    return upload(store, path)


def projector_blob(store: ModelStore, tmp_path: Path) -> str:
    path = tmp_path / "mmproj.gguf"
    if not path.exists():
        write_projector_gguf(path)
    return upload(store, path)


def no_registry(name_text: str, insecure: bool, cancel):
    """The puller of tests without a registry: a missing `from` model stays missing."""
    raise NotFound("pull model manifest: file does not exist")
    yield  # a generator, like Transfer.pull_progress


@pytest.fixture
def creator(store):
    return build_creator(store, pull=no_registry)


def create(store: ModelStore, req: dict, pull=no_registry) -> list[str]:
    """Runs a create to the end; returns its status lines."""
    return [line["status"] for line in build_creator(store, pull).create(req)]


def make_model(store: ModelStore, tmp_path: Path, name: str, **fields) -> list[str]:
    """Creates `name` from the tiny llama GGUF (plus any create fields)."""
    return create(store, {"model": name, "files": {"model.gguf": llama_blob(store, tmp_path)}, **fields})


def set_mtime(path: Path, seconds: float) -> None:
    os.utime(path, (seconds, seconds))


def blob_names(store: ModelStore) -> set[str]:
    return set(os.listdir(store.paths.blobs_dir))


def manifest_path(store: ModelStore, host: str, ns: str, model: str, tag: str) -> Path:
    return store.paths.manifests_dir / host / ns / model / tag
