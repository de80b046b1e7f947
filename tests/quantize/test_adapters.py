"""LoRA adapters: validation against the base before llama.cpp ever sees them, and their real effect.

llama-cpp-python 0.3.36 reports a mismatched adapter as loaded and then segfaults, so validate_adapter must
refuse every mismatch with INVALID_ARGUMENT (HTTP 400) and a reason. A matching adapter must change the
model's logits when llama.cpp applies it (in a child process), and loading without it must give the base
model's logits back exactly.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import gguf
import numpy as np
import pytest

from corral.service.convert.adapters import validate_adapter
from corral.store.errors import InvalidArgument
from tests.gguf_models import write_bert_gguf, write_llama_gguf, write_lora_gguf

PROBE = Path(__file__).resolve().parents[1] / "convert" / "llama_probe.py"
IDS = [1, 300, 400, 500, 600]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("lora")
    return {
        "base": write_llama_gguf(d / "base.gguf"),
        "lora": write_lora_gguf(d / "lora.gguf", targets=("attn_q", "attn_v", "ffn_up", "ffn_down")),
        "wide": write_lora_gguf(d / "wide.gguf", n_embd=128),
        "gemma": write_lora_gguf(d / "gemma.gguf", arch="gemma"),
        "deep": write_lora_gguf(d / "deep.gguf", n_layer=3),
        "bert": write_bert_gguf(d / "bert.gguf"),
        "text": _write(d / "notes.gguf", b"this is not a GGUF file at all"),
    }


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _lora_with(path: Path, tensors: dict[str, np.ndarray], arch: str = "llama", kind: str = "lora") -> Path:
    w = gguf.GGUFWriter(str(path), arch)
    w.add_type("adapter")
    w.add_string("adapter.type", kind)
    w.add_float32("adapter.lora.alpha", 8.0)
    for name, data in tensors.items():
        w.add_tensor(name, data.astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_matching_adapter_is_accepted(files):
    validate_adapter(files["base"], files["lora"])


@pytest.mark.parametrize("adapter, why", [
    ("wide", 'tensor "blk.0.attn_q.weight" has shape [64, 64] in the base model'),
    ("gemma", 'adapter architecture "gemma" does not match the base model\'s "llama"'),
    ("deep", 'tensor "blk.2.attn_q.weight" does not exist in the base model'),
    ("bert", 'general.type is "model", not "adapter"'),
    ("base", 'general.type is "model", not "adapter"'),
    ("text", "adapter: supplied file was not in GGUF format"),
])
def test_mismatched_adapters_are_refused_with_400(files, adapter, why):
    with pytest.raises(InvalidArgument) as exc:
        validate_adapter(files["base"], files[adapter])
    assert exc.value.code == "INVALID_ARGUMENT"
    assert exc.value.message.startswith("invalid adapter: ")
    assert why in exc.value.message


def test_half_pairs_transposed_halves_and_other_kinds_are_refused(files, tmp_path):
    a, b = np.ones((4, 64)), np.ones((64, 4))
    cases = {
        "only_a": ({"blk.0.attn_q.weight.lora_a": a}, 'tensor "blk.0.attn_q.weight.lora_b" is missing'),
        "swapped": ({"blk.0.attn_q.weight.lora_a": b, "blk.0.attn_q.weight.lora_b": a}, "do not fit"),
        "rank": ({"blk.0.attn_q.weight.lora_a": a, "blk.0.attn_q.weight.lora_b": np.ones((64, 8))}, "do not fit"),
        "stray": ({"blk.0.attn_q.weight": np.ones((64, 64))}, 'unexpected tensor "blk.0.attn_q.weight"'),
        "norm": ({"blk.0.attn_norm.weight.lora_a": a, "blk.0.attn_norm.weight.lora_b": b}, "is not a matrix"),
    }
    for name, (tensors, why) in cases.items():
        path = _lora_with(tmp_path / f"{name}.gguf", tensors)
        with pytest.raises(InvalidArgument, match="^invalid adapter: ") as exc:
            validate_adapter(files["base"], path)
        assert why in exc.value.message, name
    cvec = _lora_with(tmp_path / "cvec.gguf", {"blk.0.attn_q.weight.lora_a": a,
                                              "blk.0.attn_q.weight.lora_b": b}, kind="control_vector")
    with pytest.raises(InvalidArgument, match='only "lora" is supported'):
        validate_adapter(files["base"], cvec)


def test_token_embd_adapter_uses_llama_cpps_swapped_layout(files, tmp_path):
    """llama.cpp looks token_embd's LoRA up by rows: lora_a (numpy (n_vocab, r)), lora_b ((n_embd, r)).

    On a base with tied output embeddings llama.cpp also applies it to the output matmul and aborts, so
    there it is refused; the shape rule itself is checked on tensor tables with an output.weight.
    """
    from corral.service.convert.adapters import check_tensors

    base = {"token_embd.weight": [64, 1246], "output.weight": [64, 1246]}
    check_tensors({"token_embd.weight.lora_a": [4, 1246], "token_embd.weight.lora_b": [4, 64]}, base)
    with pytest.raises(InvalidArgument, match="do not fit"):
        check_tensors({"token_embd.weight.lora_a": [64, 4], "token_embd.weight.lora_b": [1246, 4]}, base)
    n_vocab = read_vocab(files["base"])
    tied = _lora_with(tmp_path / "embd.gguf", {"token_embd.weight.lora_a": np.ones((n_vocab, 4)),
                                              "token_embd.weight.lora_b": np.ones((64, 4))})
    with pytest.raises(InvalidArgument, match="tied output embeddings"):
        validate_adapter(files["base"], tied)


def read_vocab(path: Path) -> int:
    from corral.store.gguf_info import read_gguf

    return next(t.shape[1] for t in read_gguf(path).tensors if t.name == "token_embd.weight")


def test_adapter_changes_outputs_and_absence_restores_the_base(files):
    reqs = [{"model": str(files["base"]), "tokens": [IDS]},
            {"model": str(files["base"]), "tokens": [IDS], "lora": str(files["lora"])},
            {"model": str(files["base"]), "tokens": [IDS]}]
    r = subprocess.run([sys.executable, str(PROBE), json.dumps({"batch": reqs})],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    base, adapted, again = (np.asarray(o["logits"][0]) for o in json.loads(r.stdout))
    assert np.abs(adapted - base).max() > 1e-2
    assert np.array_equal(base, again)
