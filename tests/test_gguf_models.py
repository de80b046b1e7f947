"""Proves the shared tiny-model builders (tests/gguf_models.py) write files llama.cpp really loads.

Why: every engine test relies on these files; if a builder drifts from what llama.cpp accepts, those tests
would fail far from the cause. Each load runs in a child interpreter so that a llama.cpp abort (it calls
abort() on a bad model) fails one test instead of killing pytest.
"""

import hashlib
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.gguf_models import (  # noqa: E402
    spm_vocab,
    wordpiece_vocab,
    write_bert_gguf,
    write_llama_gguf,
    write_lora_gguf,
)

MAX_BYTES = 4 * 1024 * 1024

try:
    import llama_cpp  # noqa: F401

    HAVE_LLAMA = True
except Exception:  # pragma: no cover - depends on the environment
    HAVE_LLAMA = False

needs_llama = pytest.mark.skipif(not HAVE_LLAMA, reason="llama_cpp is not installed")


def run_child(code: str, timeout: float = 120) -> dict:
    """Runs `code` in a fresh interpreter; it must print one JSON object on its last stdout line."""
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, f"child failed rc={proc.returncode}\n{proc.stderr[-3000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


BUILDERS = {
    "llama": lambda p, **kw: write_llama_gguf(p, **kw),
    "llama_f16": lambda p, **kw: write_llama_gguf(p, dtype="f16", **kw),
    "llama_pooled": lambda p, **kw: write_llama_gguf(p, pooling="mean", **kw),
    "llama_quantizable": lambda p, **kw: write_llama_gguf(p, quantizable=True, **kw),
    "bert": lambda p, **kw: write_bert_gguf(p, **kw),
    "lora": lambda p, **kw: write_lora_gguf(p, **kw),
}


@pytest.mark.parametrize("kind", sorted(BUILDERS))
def test_deterministic_and_small(tmp_path, kind):
    a = BUILDERS[kind](tmp_path / "a.gguf", seed=3)
    b = BUILDERS[kind](tmp_path / "b.gguf", seed=3)
    c = BUILDERS[kind](tmp_path / "c.gguf", seed=4)
    assert a.read_bytes()[:4] == b"GGUF"
    assert sha(a) == sha(b)
    assert sha(a) != sha(c)
    assert a.stat().st_size < MAX_BYTES


def test_vocabularies():
    tokens, scores, types = spm_vocab()
    assert tokens[:3] == ["<unk>", "<s>", "</s>"]
    assert tokens[3] == "<0x00>" and tokens[258] == "<0xFF>" and set(types[3:259]) == {6}
    assert len(tokens) == len(set(tokens)) == len(scores) == len(types)
    # every prefix of a word piece is itself a piece, so SPM can merge up to the whole word
    assert {"▁h", "▁he", "▁hel", "▁hell", "▁hello"} <= set(tokens)
    wp, wtypes = wordpiece_vocab()
    assert (wp[0], wp[100], wp[101], wp[102], wp[103]) == ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
    assert len(wp) == len(set(wp)) == len(wtypes)


def test_bad_dtype(tmp_path):
    with pytest.raises(ValueError):
        write_llama_gguf(tmp_path / "x.gguf", dtype="q4")


@needs_llama
@pytest.mark.parametrize("kind", ["llama", "llama_f16", "llama_quantizable"])
def test_llama_generates(tmp_path, kind):
    path = BUILDERS[kind](tmp_path / "m.gguf")
    out = run_child(f"""
        import json, llama_cpp
        m = llama_cpp.Llama({str(path)!r}, n_ctx=128, verbose=False, seed=1)
        toks = m.tokenize(b"hello the world", add_bos=False)
        r = m.create_completion("hello the", max_tokens=8, temperature=0.0)
        print(json.dumps({{"toks": toks, "text": r["choices"][0]["text"],
                          "usage": r["usage"], "n_vocab": m.n_vocab(), "n_ctx_train": m._model.n_ctx_train()}}))
    """)
    assert out["n_ctx_train"] == 256
    assert len(out["toks"]) == 3  # whole-word pieces, not bytes
    assert out["usage"]["completion_tokens"] >= 1


@needs_llama
def test_llama_pooled_embeds(tmp_path):
    path = write_llama_gguf(tmp_path / "m.gguf", pooling="mean")
    out = run_child(f"""
        import json, llama_cpp
        m = llama_cpp.Llama({str(path)!r}, embedding=True, verbose=False)
        e = m.embed("hello world")
        print(json.dumps({{"len": len(e), "first": e[0]}}))
    """)
    assert out["len"] == 64  # one pooled vector, not one per token
    assert isinstance(out["first"], float)


@needs_llama
def test_bert_embeds(tmp_path):
    path = write_bert_gguf(tmp_path / "b.gguf")
    out = run_child(f"""
        import json, llama_cpp
        m = llama_cpp.Llama({str(path)!r}, embedding=True, verbose=False)
        a = m.embed("hello world")
        b = m.embed(["the cat", "a dog"])
        toks = m.tokenize(b"hello world")
        print(json.dumps({{"len": len(a), "n": len(b), "lenb": len(b[1]), "toks": toks}}))
    """)
    assert out["len"] == 64 and out["n"] == 2 and out["lenb"] == 64
    assert out["toks"][0] == 101 and out["toks"][-1] == 102  # [CLS] … [SEP]
    assert 100 not in out["toks"]  # known words, no [UNK]


@needs_llama
def test_lora_applies(tmp_path):
    base = write_llama_gguf(tmp_path / "m.gguf")
    lora = write_lora_gguf(tmp_path / "l.gguf", rank=4, alpha=8.0)
    code = """
        import json, llama_cpp
        kw = dict(n_ctx=64, verbose=False, logits_all=True)
        {lora}
        m = llama_cpp.Llama({base!r}, **kw)
        m.eval(m.tokenize(b"hello the world"))
        print(json.dumps({{"logits": [float(x) for x in m.scores[m.n_tokens - 1][:16]]}}))
    """
    plain = run_child(code.format(base=str(base), lora=""))
    with_lora = run_child(code.format(base=str(base), lora=f"kw['lora_path'] = {str(lora)!r}"))
    assert plain["logits"] != with_lora["logits"]


@needs_llama
def test_quantizable_model_takes_k_quants(tmp_path):
    """quantizable=True widths are multiples of 256, so Q4_K_M really yields Q4_K tensors."""
    src = write_llama_gguf(tmp_path / "f16.gguf", quantizable=True)
    dst = tmp_path / "q4.gguf"
    out = run_child(f"""
        import ctypes, json, llama_cpp
        p = llama_cpp.llama_model_quantize_default_params()
        p.ftype = 15  # LLAMA_FTYPE_MOSTLY_Q4_K_M
        rc = llama_cpp.llama_model_quantize({str(src).encode()!r}, {str(dst).encode()!r}, ctypes.byref(p))
        m = llama_cpp.Llama({str(dst)!r}, n_ctx=128, verbose=False)
        r = m.create_completion("hello", max_tokens=4, temperature=0.0)
        print(json.dumps({{"rc": rc, "n": r["usage"]["completion_tokens"]}}))
    """)
    assert out["rc"] == 0 and out["n"] >= 1
    from corral.store.gguf_info import read_gguf

    info = read_gguf(dst)
    assert info.file_type == "Q4_K_M"
    assert "Q4_K" in {t.type for t in info.tensors}
    assert dst.stat().st_size < src.stat().st_size
