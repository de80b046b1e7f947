"""Tests for store/gguf_info.py against the shared tiny-model builders and hand-written edge-case files.

Why: show, tags details, create's layer typing and adapter validation all read these values, and Ollama
clients compare them (file_type names, null arrays, float32 reprs) byte for byte.
"""

import sys
import time
from pathlib import Path

import gguf
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from corral.store.errors import Internal, InvalidArgument  # noqa: E402
from corral.store.gguf_info import (  # noqa: E402
    FILE_TYPE_IDS,
    FILE_TYPE_NAMES,
    human_parameter_count,
    is_gguf,
    read_gguf,
)
from tests.gguf_models import write_bert_gguf, write_llama_gguf, write_lora_gguf  # noqa: E402


def finish(w: gguf.GGUFWriter) -> None:
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_llama_basics(tmp_path):
    info = read_gguf(write_llama_gguf(tmp_path / "m.gguf", chat_template="{{ messages }}", name="tiny"))
    assert info.architecture == "llama"
    assert info.file_type == "F32"
    assert info.general_type == "model"
    assert info.pooling is False
    assert (info.context_length, info.embedding_length) == (256, 64)
    assert info.chat_template == "{{ messages }}"
    assert info.kv["general.name"] == "tiny"
    assert info.kv["llama.attention.layer_norm_rms_epsilon"] == 1e-05
    assert repr(info.kv["llama.rope.freq_base"]) == "10000.0"
    assert info.kv["tokenizer.ggml.tokens"][:3] == ["<unk>", "<s>", "</s>"]
    assert info.kv["tokenizer.ggml.add_bos_token"] is True
    names = [t.name for t in info.tensors]
    assert names[:2] == ["token_embd.weight", "output_norm.weight"]
    emb = info.tensors[0]
    n_vocab = len(info.kv["tokenizer.ggml.tokens"])
    assert (emb.type, emb.shape) == ("F32", [64, n_vocab])  # GGUF order: innermost first
    expected = n_vocab * 64 + 64 + 2 * (64 + 4 * 64 * 64 + 64 + 3 * 64 * 128)
    assert info.parameter_count == expected
    assert info.tensors_json()[1] == {"name": "output_norm.weight", "type": "F32", "shape": [64]}


@pytest.mark.parametrize(
    "kwargs, file_type, pooling",
    [
        ({"dtype": "f16"}, "F16", False),
        ({"pooling": "mean"}, "F32", True),
        ({"quantizable": True}, "F16", False),
        ({"dtype": "f16", "file_type": False}, "F16", False),  # inferred from tensors
        ({"file_type": False}, "F32", False),
    ],
)
def test_llama_variants(tmp_path, kwargs, file_type, pooling):
    info = read_gguf(write_llama_gguf(tmp_path / "m.gguf", **kwargs))
    assert info.file_type == file_type
    assert info.pooling is pooling
    assert ("general.file_type" in info.kv) is kwargs.get("file_type", True)


def test_bert(tmp_path):
    info = read_gguf(write_bert_gguf(tmp_path / "b.gguf"))
    assert (info.architecture, info.pooling, info.context_length) == ("bert", True, 128)
    assert info.kv["bert.attention.causal"] is False
    assert info.kv["bert.attention.layer_norm_epsilon"] == 1e-12
    assert info.kv["tokenizer.ggml.tokens"][100:104] == ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert info.chat_template is None


def test_lora(tmp_path):
    info = read_gguf(write_lora_gguf(tmp_path / "a.gguf", rank=4, alpha=16.0))
    assert info.general_type == "adapter"
    assert info.kv["adapter.type"] == "lora"
    assert info.kv["adapter.lora.alpha"] == 16.0
    t = {x.name: x for x in info.tensors}
    assert t["blk.0.attn_q.weight.lora_a"].shape == [64, 4]
    assert t["blk.0.attn_q.weight.lora_b"].shape == [4, 64]
    assert info.context_length is None
    bad = read_gguf(write_lora_gguf(tmp_path / "b.gguf", arch="gemma", n_embd=32))
    assert bad.architecture == "gemma"
    assert bad.tensors[0].shape == [32, 4]


def test_model_info(tmp_path):
    path = write_llama_gguf(tmp_path / "m.gguf", chat_template="x", extra_kv={"general.parameter_count": 7})
    info = read_gguf(path)
    short = info.model_info(verbose=False)
    assert "general.name" not in short and "tokenizer.chat_template" not in short
    assert short["general.parameter_count"] == info.parameter_count != 7
    assert short["tokenizer.ggml.tokens"] is None and short["tokenizer.ggml.scores"] is None
    assert short["llama.context_length"] == 256
    full = info.model_info(verbose=True)
    assert full["tokenizer.ggml.tokens"] == info.kv["tokenizer.ggml.tokens"]
    assert isinstance(full["tokenizer.ggml.scores"][5], float)
    assert "general.name" not in full


def test_value_types_and_empty_array(tmp_path):
    path = tmp_path / "t.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_uint8("k.u8", 200)
    w.add_int8("k.i8", -5)
    w.add_uint16("k.u16", 60000)
    w.add_int16("k.i16", -300)
    w.add_int32("k.i32", -70000)
    w.add_uint64("k.u64", 2**40)
    w.add_int64("k.i64", -(2**40))
    w.add_float64("k.f64", 0.1)
    w.add_float32("k.f32", 0.1)
    w.add_string("k.utf8", "héllo ☃")
    w.add_array("k.ints", [1, 2, 3])
    w.add_array("k.floats", [0.1, 1e-5])
    w.add_array("k.bools", [True, False])
    w.add_tensor("x", np.zeros((3, 4), np.float32))
    finish(w)
    kv = read_gguf(path).kv
    assert (kv["k.u8"], kv["k.i8"], kv["k.u16"], kv["k.i16"]) == (200, -5, 60000, -300)
    assert (kv["k.i32"], kv["k.u64"], kv["k.i64"]) == (-70000, 2**40, -(2**40))
    assert kv["k.f64"] == 0.1 and kv["k.f32"] == 0.1
    assert kv["k.utf8"] == "héllo ☃"
    assert kv["k.ints"] == [1, 2, 3] and kv["k.floats"] == [0.1, 1e-05] and kv["k.bools"] == [True, False]
    info = read_gguf(path)
    assert info.model_info()["k.ints"] is None
    assert info.tensors[0].shape == [4, 3]
    assert info.architecture == "llama" and info.file_type == "F32" and info.parameter_count == 12


def test_empty_array_stays_empty(tmp_path):
    """gguf's writer refuses empty arrays, so this file is written by hand: 0 tensors, 2 keys."""

    def s(text: str) -> bytes:
        return len(text.encode()).to_bytes(8, "little") + text.encode()

    u32 = lambda n: n.to_bytes(4, "little")  # noqa: E731
    data = b"GGUF" + u32(3) + (0).to_bytes(8, "little") + (2).to_bytes(8, "little")
    data += s("general.architecture") + u32(8) + s("clip")
    data += s("k.empty") + u32(9) + u32(5) + (0).to_bytes(8, "little")
    p = tmp_path / "e.gguf"
    p.write_bytes(data)
    info = read_gguf(p)
    assert info.kv == {"general.architecture": "clip", "k.empty": []}
    assert info.model_info() == {"general.architecture": "clip", "k.empty": [], "general.parameter_count": 0}
    assert (info.file_type, info.parameter_count, info.tensors) == ("unknown", 0, [])


@pytest.mark.parametrize(
    "qtype, expected",
    [("Q8_0", "Q8_0"), ("Q4_K", "Q4_K_M"), ("Q6_K", "Q6_K"), ("BF16", "BF16"), ("Q5_K", "Q5_K_M")],
)
def test_file_type_inferred_from_dominant_tensor(tmp_path, qtype, expected):
    path = tmp_path / "q.gguf"
    t = gguf.GGMLQuantizationType[qtype]
    block, nbytes = gguf.GGML_QUANT_SIZES[t]
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_tensor("big", np.zeros((8, 256 // block * nbytes), np.uint8), raw_dtype=t)
    w.add_tensor("small", np.zeros((2, 4), np.float16))
    w.add_tensor("norm", np.zeros((4096,), np.float32))  # 1-D tensors do not count
    finish(w)
    info = read_gguf(path)
    assert info.file_type == expected
    assert info.tensors[0].type == qtype and info.tensors[0].shape == [256, 8]
    assert info.parameter_count == 8 * 256 + 8 + 4096


def test_file_type_names_match_llama_cpp():
    for num, name in FILE_TYPE_NAMES.items():
        enum_name = gguf.LlamaFileType(num).name
        assert enum_name in ("ALL_" + name, "MOSTLY_" + name, "MOSTLY_" + name + "_MOE"), (num, name)
        assert FILE_TYPE_IDS[name] == num
    for name in ("F32", "F16", "Q4_0", "Q8_0", "Q4_K_S", "Q4_K_M", "Q6_K", "BF16", "IQ4_XS"):
        assert name in FILE_TYPE_IDS


@pytest.mark.parametrize("data", [b"", b"GG", b"not a gguf file at all", b"\x00" * 64, b"PK\x03\x04zip"])
def test_not_gguf(tmp_path, data):
    p = tmp_path / "x.bin"
    p.write_bytes(data)
    assert not is_gguf(p)
    with pytest.raises(InvalidArgument) as e:
        read_gguf(p)
    assert e.value.message == "supplied file was not in GGUF format"


def test_is_gguf(tmp_path):
    assert is_gguf(write_llama_gguf(tmp_path / "m.gguf"))
    assert not is_gguf(tmp_path / "missing")
    assert not is_gguf(tmp_path)


def test_old_version_rejected(tmp_path):
    p = tmp_path / "v1.gguf"
    p.write_bytes(b"GGUF" + (1).to_bytes(4, "little") + b"\x00" * 16)
    with pytest.raises(InvalidArgument):
        read_gguf(p)


@pytest.mark.parametrize("keep", [8, 24, 100, 5000])
def test_truncated_is_internal(tmp_path, keep):
    data = write_llama_gguf(tmp_path / "m.gguf").read_bytes()
    p = tmp_path / "t.gguf"
    p.write_bytes(data[:keep])
    with pytest.raises(Internal):
        read_gguf(p)


def test_big_file_and_vocab_are_fast(tmp_path):
    """A 4 GiB (sparse) file with a Llama-3-sized vocabulary: only the header is touched."""
    path = tmp_path / "big.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_token_list([f"tok{i}" for i in range(128_000)])
    w.add_token_scores([0.0] * 128_000)
    w.add_token_merges([f"a{i} b{i}" for i in range(150_000)])
    w.add_tensor("x", np.zeros((4, 4), np.float32))
    finish(w)
    with open(path, "r+b") as f:
        f.truncate(4 * 1024**3)
    start = time.perf_counter()
    info = read_gguf(path)
    elapsed = time.perf_counter() - start
    assert len(info.kv["tokenizer.ggml.merges"]) == 150_000
    assert elapsed < 3.0, elapsed


@pytest.mark.parametrize(
    "n, text",
    [
        (8_000_000_000, "8B"),
        (8_030_261_248, "8.0B"),
        (3_212_749_888, "3.2B"),
        (70_553_706_496, "70.6B"),
        (1_000_000_000, "1B"),
        (15_210_000, "15.21M"),
        (22_000_000, "22M"),
        (22_565_376, "22.57M"),
        (161_984, "162K"),
        (1_000, "1K"),
        (2_500, "2K"),  # Go's %.0f rounds half to even, as Python does
        (999, "999"),
        (0, "0"),
    ],
)
def test_human_parameter_count(n, text):
    assert human_parameter_count(n) == text
