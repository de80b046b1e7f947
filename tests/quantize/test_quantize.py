"""Quantization through llama.cpp's own quantizer in a child process (service/quantize.py), for real.

A test-built F16 llama whose rows are multiples of 256 (so K-quants really apply) is quantized to every type
once per module, two at a time (the machine has two cores); each result must say its type in the GGUF and in
its tensors, load and generate in a separate process, stay close to the F16 model's logits, and the sizes
must shrink in the order the types promise.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from corral.service.convert.quantize import QUANT_TYPES, normalize_type, quantize
from corral.store.errors import Cancelled, Internal, InvalidArgument
from corral.store.gguf_info import read_gguf
from tests.gguf_models import write_llama_gguf

PROBE = Path(__file__).resolve().parents[1] / "convert" / "llama_probe.py"
TARGETS = [t for t in QUANT_TYPES if t != "F16"]
PROMPT_IDS = [1, 300, 400, 500, 600, 700, 800]


def probe(req: dict):
    r = subprocess.run([sys.executable, str(PROBE), json.dumps(req)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout)


@pytest.fixture(scope="module")
def quantized(tmp_path_factory):
    """{type: (path, progress lines)} for every target type, from one F16 source."""
    root = tmp_path_factory.mktemp("quant")
    src = write_llama_gguf(root / "src.gguf", quantizable=True, dtype="f16")

    def run(name):
        dst = root / f"{name}.gguf"
        return name, (dst, list(quantize(src, dst, name)))

    with ThreadPoolExecutor(2) as pool:
        out = dict(pool.map(run, TARGETS))
    out["F16"] = (src, [])
    return out


@pytest.mark.parametrize("text, name", [
    ("q4_K_M", "Q4_K_M"), ("Q4_K", "Q4_K_M"), ("q4_k", "Q4_K_M"), ("q8_0", "Q8_0"), (" q2_k ", "Q2_K"),
    ("Q3_K_S", "Q3_K_S"), ("q3_k_l", "Q3_K_L"), ("q5_K_S", "Q5_K_S"), ("q6_K", "Q6_K"), ("f16", "F16"),
    ("bf16", "BF16"), ("Q4_0", "Q4_0"), ("q5_1", "Q5_1"),
])
def test_normalize_type(text, name):
    assert normalize_type(text) == name


def test_unknown_type_names_the_supported_ones():
    with pytest.raises(InvalidArgument) as exc:
        normalize_type("iq2_xxs")
    assert exc.value.message.startswith("unsupported quantization type IQ2_XXS - supported types are F32, F16,")
    assert "Q4_K_M" in exc.value.message and "Q2_K" in exc.value.message
    assert exc.value.code == "INVALID_ARGUMENT"


def test_every_type_is_written_with_its_file_type_and_tensor_types(quantized):
    expect_tensor = {"Q4_K_M": "Q4_K", "Q4_K_S": "Q4_K", "Q5_K_M": "Q5_K", "Q5_K_S": "Q5_K", "Q3_K_S": "Q3_K",
                     "Q3_K_M": "Q3_K", "Q3_K_L": "Q3_K", "Q2_K": "Q2_K", "Q6_K": "Q6_K", "Q8_0": "Q8_0",
                     "Q4_0": "Q4_0", "Q4_1": "Q4_1", "Q5_0": "Q5_0", "Q5_1": "Q5_1", "BF16": "BF16", "F32": "F32"}
    for name in TARGETS:
        info = read_gguf(quantized[name][0])
        assert info.file_type == name
        assert info.kv["general.file_type"] == QUANT_TYPES[name]
        types = {t.name: t.type for t in info.tensors}
        assert expect_tensor[name] in set(types.values()), (name, set(types.values()))
        assert types["blk.0.attn_norm.weight"] == "F32"  # 1-D tensors stay F32
        assert len(info.tensors) == 20


def test_sizes_shrink_in_the_expected_order(quantized):
    size = {name: path.stat().st_size for name, (path, _) in quantized.items()}
    for chain in (["F32", "F16", "Q8_0", "Q6_K", "Q5_K_M", "Q5_K_S", "Q4_K_M", "Q4_K_S", "Q3_K_L", "Q3_K_M",
                   "Q3_K_S", "Q2_K"],
                  ["Q8_0", "Q5_1", "Q5_0", "Q4_1", "Q4_0", "Q2_K"]):
        for bigger, smaller in zip(chain, chain[1:]):
            assert size[bigger] > size[smaller], (bigger, smaller, size)
    assert abs(size["BF16"] - size["F16"]) < 1024  # same data, a few more metadata bytes
    assert size["Q4_K_M"] < size["F16"] / 3


def test_progress_lines(quantized):
    lines = quantized["Q4_K_M"][1]
    assert lines[-1] == {"status": "verifying conversion"}
    progress = lines[:-1]
    assert progress and all(p["status"] == "quantizing F16 model to Q4_K_M" for p in progress)
    assert all(p["digest"] == "0000000000000000000" for p in progress)
    total = progress[0]["total"]
    assert total == 3264512 and all(p["total"] == total for p in progress)  # bytes of F16/F32 tensor data
    completed = [p["completed"] for p in progress]
    assert completed == sorted(completed) and completed[0] == 0 and completed[-1] == total


def test_each_type_loads_generates_and_stays_close_to_f16(quantized):
    names = ["F16", *TARGETS]
    outs = probe({"batch": [{"model": str(quantized[n][0]), "tokens": [PROMPT_IDS],
                             "generate": {"prompt": "the sky is", "max_tokens": 4}} for n in names]})
    results = dict(zip(names, outs))
    base = np.asarray(results["F16"]["logits"][0])
    floor = {"F32": 0.9999, "BF16": 0.999, "Q8_0": 0.999, "Q6_K": 0.99, "Q5_K_M": 0.98, "Q5_K_S": 0.98,
             "Q5_1": 0.98, "Q5_0": 0.98}
    for name in TARGETS:
        out = results[name]
        assert isinstance(out["text"], str)
        got = np.asarray(out["logits"][0])
        assert np.isfinite(got).all()
        cos = min(float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)) for a, b in zip(base, got))
        assert cos >= floor.get(name, 0.8), (name, cos)


def test_quantized_source_is_refused(quantized, tmp_path):
    with pytest.raises(Internal, match="^quantization is only supported for F16, BF16 and F32 models$"):
        next(quantize(quantized["Q4_K_M"][0], tmp_path / "x.gguf", "q8_0"))
    assert not (tmp_path / "x.gguf").exists()


def test_same_type_is_a_copy(quantized, tmp_path):
    src = quantized["F16"][0]
    assert list(quantize(src, tmp_path / "same.gguf", "f16")) == []
    assert (tmp_path / "same.gguf").read_bytes() == src.read_bytes()


def test_cancel_stops_the_child_and_removes_the_output(quantized, tmp_path):
    cancel = threading.Event()
    gen = quantize(quantized["F32"][0], tmp_path / "c.gguf", "q4_k_m", cancel)
    assert next(gen)["completed"] == 0
    cancel.set()
    with pytest.raises(Cancelled):
        list(gen)
    assert not (tmp_path / "c.gguf").exists()


def test_a_broken_source_fails_in_the_child_not_here(quantized, tmp_path):
    """A header that promises more data than the file has: llama.cpp fails; the server process lives."""
    data = quantized["F16"][0].read_bytes()
    bad = tmp_path / "truncated.gguf"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(Internal, match="^quantization failed: "):
        list(quantize(bad, tmp_path / "out.gguf", "q4_0"))
    assert not (tmp_path / "out.gguf").exists()


def test_closing_the_stream_kills_the_child(quantized, tmp_path):
    """A client that goes away closes the generator (GeneratorExit at a yield): the child must not outlive it."""
    import multiprocessing

    gen = quantize(quantized["F32"][0], tmp_path / "closed.gguf", "q3_k_s")
    next(gen)
    children = [p for p in multiprocessing.active_children() if p.name == "corral-quantize"]
    gen.close()
    assert all(not p.is_alive() for p in children)
    assert not (tmp_path / "closed.gguf").exists()
