"""Conversion request errors, the safetensors reader and the tokenizer readers, without torch.

Every request error must come with Ollama's text and before the first status line (so the create stream can
answer with an HTTP status instead of an in-stream error), and leave no output or temporary folder behind.
The safetensors files here are written by hand (header + raw bytes), so the reader is checked against the
format itself, BF16 included.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest

from corral.service.convert import ARCHITECTURES, convert
from corral.service.convert.safetensors import read_header
from corral.service.convert.vocab import bpe_pre
from corral.store.errors import Internal, InvalidArgument


def write_safetensors(path: Path, tensors: dict[str, tuple[str, np.ndarray]]) -> Path:
    header, blobs, offset = {}, [], 0
    for name, (dtype, data) in tensors.items():
        raw = data.tobytes()
        header[name] = {"dtype": dtype, "shape": list(data.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    head = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(head)) + head + b"".join(blobs))
    return path


@pytest.fixture
def folder(tmp_path) -> dict[str, Path]:
    d = tmp_path / "m"
    d.mkdir()
    write_safetensors(d / "model.safetensors", {"model.embed_tokens.weight": ("F32", np.ones((4, 8), np.float32))})
    (d / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"], "hidden_size": 8}))
    return {"model.safetensors": d / "model.safetensors", "config.json": d / "config.json"}


def first_error(files, out: Path):
    gen = convert(files, out)
    with pytest.raises((InvalidArgument, Internal)) as exc:
        next(gen)
    assert not out.exists()
    assert [p.name for p in out.parent.iterdir() if p.name.startswith("convert-")] == []
    return exc.value


def test_unsupported_architecture_names_the_supported_ones(folder, tmp_path):
    folder["config.json"].write_text(json.dumps({"architectures": ["FalconForCausalLM"]}))
    err = first_error(folder, tmp_path / "out.gguf")
    assert err.code == "INVALID_ARGUMENT"
    assert err.message.startswith('unsupported architecture "FalconForCausalLM" - supported architectures are ')
    for name in ("LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Gemma2ForCausalLM",
                 "Gemma3ForCausalLM", "BertModel"):
        assert name in err.message and name in ARCHITECTURES


def test_missing_or_empty_architectures(folder, tmp_path):
    folder["config.json"].write_text(json.dumps({"hidden_size": 8}))
    assert first_error(folder, tmp_path / "out.gguf").message == "unknown architecture"
    del folder["config.json"]
    assert first_error(folder, tmp_path / "out.gguf").message == "unknown architecture"


def test_no_safetensors(folder, tmp_path):
    del folder["model.safetensors"]
    assert first_error(folder, tmp_path / "out.gguf").message == "no files provided to convert"


def test_missing_tokenizer(folder, tmp_path):
    assert first_error(folder, tmp_path / "out.gguf").message == "unsupported tokenizer"


def test_paths_must_be_relative_and_blobs_must_exist(folder, tmp_path):
    bad = {**folder, "../escape.json": folder["config.json"]}
    assert first_error(bad, tmp_path / "out.gguf").message == "file path must be relative"
    missing = {**folder, "tokenizer.json": tmp_path / "blobs" / "sha256-nothere"}
    err = first_error(missing, tmp_path / "out.gguf")
    assert err.code == "INTERNAL" and err.message.endswith("no such file or directory")


def test_corrupt_safetensors_header(folder, tmp_path):
    folder["model.safetensors"].write_bytes(struct.pack("<Q", 10**9) + b"{}")
    assert first_error(folder, tmp_path / "out.gguf").message.startswith("invalid safetensors file")


def test_reader_dtypes_and_bf16(tmp_path):
    x = np.linspace(-3, 3, 12, dtype=np.float32).reshape(3, 4)
    bf16 = (x.view(np.uint32) >> 16).astype(np.uint16)  # truncation is exact for these values' top bits
    path = write_safetensors(tmp_path / "t.safetensors", {
        "a": ("F32", x), "b": ("F16", x.astype(np.float16)), "c": ("BF16", bf16), "d": ("I64", np.arange(5))})
    refs = read_header(path)
    assert refs["a"].shape == (3, 4) and np.array_equal(refs["a"].load(), x)
    assert np.array_equal(refs["b"].load(), x.astype(np.float16).astype(np.float32))
    want = (bf16.astype(np.uint32) << 16).view(np.float32)
    assert refs["c"].load().dtype == np.float32 and np.array_equal(refs["c"].load(), want)
    assert np.array_equal(refs["d"].load(), np.arange(5))


def test_reader_refuses_out_of_bounds_tensors(tmp_path):
    head = json.dumps({"a": {"dtype": "F32", "shape": [100], "data_offsets": [0, 400]}}).encode()
    path = tmp_path / "short.safetensors"
    path.write_bytes(struct.pack("<Q", len(head)) + head + b"\0" * 16)
    with pytest.raises(InvalidArgument, match="out of bounds"):
        read_header(path)


CONTRACTIONS = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+"


@pytest.mark.parametrize("pre, name", [
    ({"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": CONTRACTIONS + r"|\p{N}{1,3}"}},
        {"type": "ByteLevel", "use_regex": False}]}, "llama-bpe"),
    ({"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": CONTRACTIONS + r"|\p{N}| ?"}},
        {"type": "ByteLevel", "use_regex": False}]}, "qwen2"),
    ({"type": "ByteLevel", "add_prefix_space": False, "use_regex": True}, "gpt-2"),
    (None, "default"),
])
def test_bpe_pre_tokenizer_names(pre, name):
    assert bpe_pre({"pre_tokenizer": pre}) == name
