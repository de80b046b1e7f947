"""Safetensors -> GGUF conversion checked against transformers itself (the independent reference).

Tiny random models of every supported decoder family (tied and untied embeddings, F32/F16/BF16 safetensors)
and a tiny BERT are saved with `save_pretrained`, converted by service.convert, and run by llama.cpp in a
child process; llama.cpp's next-token logits at every position (embeddings for BERT) must match the
transformers forward pass at cosine >= 0.999, and llama.cpp's tokenization must equal the tokenizer
library's. The models are built once per module (torch starts once) and llama.cpp runs once for all of them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("sentencepiece")
pytest.importorskip("tokenizers")

import torch  # noqa: E402

from corral.service.convert import convert  # noqa: E402
from corral.service.convert.quantize import quantize  # noqa: E402
from corral.store.gguf_info import read_gguf  # noqa: E402
from tests.convert.hf_models import TEXTS, bert_model, decoder_model, folder_files  # noqa: E402

PROBE = Path(__file__).resolve().parent / "llama_probe.py"
# (family, tied embeddings, safetensors dtype) -> expected GGUF architecture
CASES = {
    ("llama", False, "float32"): "llama", ("llama", True, "bfloat16"): "llama",
    ("mistral", False, "float16"): "llama", ("qwen2", False, "float32"): "qwen2",
    ("qwen2", True, "bfloat16"): "qwen2", ("gemma2", True, "float32"): "gemma2",
    ("gemma3", True, "float32"): "gemma3", ("gemma3", False, "bfloat16"): "gemma3",
}


def case_id(case) -> str:
    return f"{case[0]}-{'tied' if case[1] else 'untied'}-{case[2]}"


def cosines(ref: np.ndarray, got: np.ndarray) -> list[float]:
    return [float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)) for a, b in zip(ref, got)]


def run_probe(reqs: list[dict]) -> list[dict]:
    r = subprocess.run([sys.executable, str(PROBE), json.dumps({"batch": reqs})],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout)


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """{case: dict(gguf, lines, ids, ref logits, encode, llama.cpp output)} for every decoder case."""
    root = tmp_path_factory.mktemp("hf")
    out = {}
    for case in CASES:
        kind, tied, dtype = case
        folder = root / case_id(case)
        model, encode = decoder_model(kind, folder, tied=tied, dtype=dtype)
        gguf_path = root / f"{case_id(case)}.gguf"
        lines = list(convert(folder_files(folder), gguf_path))
        bos = [] if kind == "qwen2" else [1]
        ids = [bos + encode(t) for t in TEXTS]
        with torch.no_grad():
            ref = [model(torch.tensor([i])).logits[0].numpy() for i in ids]
        out[case] = {"gguf": gguf_path, "lines": lines, "ids": ids, "ref": ref, "encode": encode}
    results = run_probe([{"model": str(v["gguf"]), "tokens": v["ids"], "texts": TEXTS, "chat_template": True}
                         for v in out.values()])
    for v, res in zip(out.values(), results):
        v["llama"] = res
    return out


@pytest.mark.parametrize("case", list(CASES), ids=case_id)
def test_logits_match_transformers(converted, case):
    v = converted[case]
    worst = min(min(cosines(ref, np.asarray(got))) for ref, got in zip(v["ref"], v["llama"]["logits"]))
    assert worst >= 0.999, f"{case_id(case)}: min cosine {worst}"


@pytest.mark.parametrize("case", list(CASES), ids=case_id)
def test_tokenizer_and_chat_template_match(converted, case):
    v = converted[case]
    assert v["llama"]["tokens"] == [v["encode"](t) for t in TEXTS]
    assert v["llama"]["chat_template"].startswith("{% for m in messages %}")


@pytest.mark.parametrize("case", list(CASES), ids=case_id)
def test_gguf_layout(converted, case):
    kind, tied, _ = case
    v = converted[case]
    assert v["lines"][0] == {"status": "converting model"}
    info = read_gguf(v["gguf"])
    assert info.architecture == CASES[case]
    assert info.file_type == "F16" and info.kv["general.file_type"] == 1
    types = {t.name: (t.type, len(t.shape)) for t in info.tensors}
    assert all(ty == ("F32" if nd == 1 else "F16") for ty, nd in types.values()), types
    assert ("output.weight" in types) == (not tied and kind != "gemma2")
    assert types["blk.1.ffn_down.weight"] == ("F16", 2)
    if kind == "gemma3":
        assert "blk.0.attn_q_norm.weight" in types and info.kv["gemma3.attention.sliding_window_pattern"] == \
            [True, False]


def test_bert_embeddings_match_transformers(tmp_path):
    model, encode = bert_model(tmp_path / "bert")
    lines = list(convert(folder_files(tmp_path / "bert"), tmp_path / "bert.gguf"))
    assert lines[0] == {"status": "converting model"}
    info = read_gguf(tmp_path / "bert.gguf")
    assert info.architecture == "bert" and info.pooling and info.kv["bert.pooling_type"] == 1
    types = {t.name: t.type for t in info.tensors}
    assert types["position_embd.weight"] == "F32" and types["token_types.weight"] == "F32"
    assert types["token_embd.weight"] == "F16" and not any(n.startswith("pooler") for n in types)
    (res,) = run_probe([{"model": str(tmp_path / "bert.gguf"), "embedding": True, "embed_texts": TEXTS,
                         "texts": TEXTS}])
    with torch.no_grad():
        ref = [model(torch.tensor([encode(t)])).last_hidden_state[0].mean(0).numpy() for t in TEXTS]
    assert min(cosines(ref, np.asarray(res["embeddings"]))) >= 0.999
    assert res["tokens"] == [encode(t)[1:-1] for t in TEXTS]  # [CLS] ... [SEP] added by the model


def test_converted_model_can_be_quantized(converted, tmp_path):
    v = converted[("llama", False, "float32")]
    dst = tmp_path / "q8.gguf"
    lines = list(quantize(v["gguf"], dst, "q8_0"))
    assert lines[0]["status"] == "quantizing F16 model to Q8_0" and lines[-1] == {"status": "verifying conversion"}
    assert read_gguf(dst).file_type == "Q8_0"
    (res,) = run_probe([{"model": str(dst), "tokens": v["ids"]}])
    worst = min(min(cosines(ref, np.asarray(got))) for ref, got in zip(v["ref"], res["logits"]))
    assert worst >= 0.99


@pytest.mark.parametrize("dummy_prefix", [True, False])
def test_spm_reader_matches_sentencepiece(tmp_path, dummy_prefix):
    from corral.service.convert.spm import read_spm
    from tests.convert.hf_models import spm_tokenizer

    sp = spm_tokenizer(tmp_path, dummy_prefix=dummy_prefix)
    pieces, prefix = read_spm(tmp_path / "tokenizer.model")
    assert prefix is dummy_prefix
    assert len(pieces) == sp.get_piece_size()
    for i, (piece, score, kind) in enumerate(pieces):
        assert piece == sp.id_to_piece(i) and score == pytest.approx(sp.get_score(i))
        want = 2 if sp.is_unknown(i) else 3 if sp.is_control(i) else 6 if sp.is_byte(i) else 5 if sp.is_unused(i) \
            else kind
        assert kind == want
