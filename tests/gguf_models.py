"""Tiny, seeded GGUF models written with the `gguf` package, shared by every test suite.

Why: tests need real models that llama.cpp can load (to exercise the engine, the store's GGUF parsing,
create/quantize and LoRA validation) without downloading anything. These builders write llama (text
generation, optionally pooled for embeddings), bert (embedding-only, WordPiece) and LoRA adapter files of
0.1-4 MB. The same arguments always give byte-identical files (numpy's seeded generator, no timestamps),
so digests are stable across runs.

Facts these follow are in the project notes on llama.cpp (shared/notes/llama-cpp-facts.md): the minimal keys llama.cpp needs, 1-D
tensors in F32, bert's position/token-type tensors in F32, K-quants needing rows that are a multiple of 256
(`quantizable=True`), and adapter tensors `<base>.weight.lora_a (r, n_in)` / `.lora_b (n_out, r)`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

import gguf
import numpy as np

# An English-ish word list: enough that ordinary test prompts tokenize into whole-word pieces.
WORDS = tuple("""
the of and to in is was he for it with as his on be at by had are but from or have an they which one you
were her all she there would their we him been has when who will more no if out so said what up its about
into than them can only other new some could time these two may then do first any my now such like our
over man me even most made after also did many before must through back years where much your way well
down should because each just those people how too little state good very make world still own see men
work long get here between both life being under never day same another know while last might us great
old year off come since against go came right used take three hello hi why yes not this that test model
llama sky blue red green sun moon water fire earth air story tell write code python answer question
word words sentence text token tokens say please thank thanks cat dog house tree car book name help
""".split())
PUNCT = list(".,!?;:'\"()-[]{}<>/\\@#$%^&*+=_~`|0123456789")
LETTERS = [chr(c) for c in range(ord("a"), ord("z") + 1)] + [chr(c) for c in range(ord("A"), ord("Z") + 1)]

# llama.cpp token types
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, BYTE = 1, 2, 3, 4, 6
POOLING = {None: None, "none": 0, "mean": 1, "cls": 2, "last": 3}


def spm_vocab(words: Sequence[str] = WORDS, special_tokens: Sequence[str] = ()):
    """SentencePiece vocab: <unk> <s> </s>, 256 byte tokens, chars, every prefix of each '▁word'.

    Scores grow with piece length so SPM's highest-score-first bigram merging builds whole words.
    Returns (tokens, scores, types).
    """
    tokens = ["<unk>", "<s>", "</s>"]
    types = [UNKNOWN, CONTROL, CONTROL]
    scores = [0.0, 0.0, 0.0]
    for b in range(256):
        tokens.append(f"<0x{b:02X}>")
        types.append(BYTE)
        scores.append(0.0)
    seen = set(tokens)
    pieces = ["▁"] + LETTERS + PUNCT
    for w in words:
        for cased in (w, w.capitalize()):
            full = "▁" + cased
            pieces.extend(full[:i] for i in range(2, len(full) + 1))
    for p in pieces:
        if p not in seen:
            seen.add(p)
            tokens.append(p)
            types.append(NORMAL)
            scores.append(float(len(p)) - len(tokens) * 1e-6)
    for s in special_tokens:
        if s not in seen:
            seen.add(s)
            tokens.append(s)
            types.append(CONTROL)
            scores.append(0.0)
    return tokens, scores, types


def wordpiece_vocab(words: Sequence[str] = WORDS):
    """BERT WordPiece vocab in llama.cpp's converted form: word starts '▁x', continuations bare.

    [PAD]=0, [unused1..99], [UNK]=100, [CLS]=101, [SEP]=102, [MASK]=103, then characters and words.
    """
    tokens = ["[PAD]"] + [f"[unused{i}]" for i in range(1, 100)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    types = [CONTROL] * len(tokens)
    types[100] = UNKNOWN
    seen = set(tokens)
    chars = [chr(c) for c in range(ord("a"), ord("z") + 1)] + PUNCT
    for p in ["▁" + c for c in chars] + chars + ["▁" + w.lower() for w in words]:
        if p not in seen:
            seen.add(p)
            tokens.append(p)
            types.append(NORMAL)
    return tokens, types


def _add_extra_kv(w: gguf.GGUFWriter, extra_kv: Mapping[str, object] | None) -> None:
    """Adds arbitrary keys (e.g. '<arch>.vision.block_count') for capability and model_info tests."""
    for key, val in (extra_kv or {}).items():
        if isinstance(val, bool):
            w.add_bool(key, val)
        elif isinstance(val, int):
            w.add_uint32(key, val) if val >= 0 else w.add_int32(key, val)
        elif isinstance(val, float):
            w.add_float32(key, val)
        elif isinstance(val, str):
            w.add_string(key, val)
        else:
            w.add_array(key, list(val))


def _finish(w: gguf.GGUFWriter) -> None:
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


class _Weights:
    """Seeded weight factory: 2-D tensors in the chosen dtype, 1-D tensors always F32."""

    def __init__(self, seed: int, dtype: str):
        if dtype not in ("f32", "f16"):
            raise ValueError(f"dtype must be 'f32' or 'f16', not {dtype!r}")
        self.rng = np.random.default_rng(seed)
        self.dtype = np.float16 if dtype == "f16" else np.float32

    def matrix(self, rows: int, cols: int, scale: float | None = None) -> np.ndarray:
        scale = scale if scale is not None else 1.0 / np.sqrt(cols)
        return (self.rng.standard_normal((rows, cols)) * scale).astype(self.dtype)

    def f32_matrix(self, rows: int, cols: int, scale: float = 0.1) -> np.ndarray:
        return (self.rng.standard_normal((rows, cols)) * scale).astype(np.float32)

    def vector(self, n: int, value: float | None = None) -> np.ndarray:
        if value is not None:
            return np.full((n,), value, dtype=np.float32)
        return (self.rng.standard_normal(n) * 0.02).astype(np.float32)


def write_llama_gguf(
    path: str | os.PathLike,
    *,
    seed: int = 0,
    n_embd: int | None = None,
    n_ff: int | None = None,
    n_layer: int = 2,
    n_head: int = 4,
    n_head_kv: int | None = None,
    n_ctx: int = 256,
    words: Sequence[str] = WORDS,
    special_tokens: Sequence[str] = (),
    dtype: str | None = None,
    pooling: str | None = None,
    chat_template: str | None = None,
    name: str = "tiny-llama",
    quantizable: bool = False,
    file_type: bool = True,
    extra_kv: Mapping[str, object] | None = None,
) -> Path:
    """A tiny llama text model. Defaults: E=64, F=128, 2 layers, F32 (~0.6 MB).

    quantizable=True switches the defaults to E=256, F=512 and F16 (~3 MB) so K-quants really apply.
    pooling='mean' (or 'cls'/'last') writes llama.pooling_type, making it an embedding model.
    file_type=False omits general.file_type (to test inference from tensor types).
    """
    n_embd = n_embd or (256 if quantizable else 64)
    n_ff = n_ff or (512 if quantizable else 128)
    dtype = dtype or ("f16" if quantizable else "f32")
    n_head_kv = n_head_kv or n_head
    wt = _Weights(seed, dtype)
    tokens, scores, types = spm_vocab(words, special_tokens)
    arch = "llama"
    w = gguf.GGUFWriter(str(path), arch)
    w.add_type("model")
    w.add_name(name)
    if file_type:
        w.add_file_type(1 if dtype == "f16" else 0)
    w.add_context_length(n_ctx)
    w.add_embedding_length(n_embd)
    w.add_block_count(n_layer)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_head_kv)
    w.add_rope_dimension_count(n_embd // n_head)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    if POOLING.get(pooling) is not None:
        w.add_uint32(f"{arch}.pooling_type", POOLING[pooling])
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    if chat_template is not None:
        w.add_chat_template(chat_template)
    _add_extra_kv(w, extra_kv)

    n_vocab = len(tokens)
    kv_dim = n_embd // n_head * n_head_kv
    w.add_tensor("token_embd.weight", wt.matrix(n_vocab, n_embd, scale=1.0))
    w.add_tensor("output_norm.weight", wt.vector(n_embd, 1.0))
    for i in range(n_layer):
        w.add_tensor(f"blk.{i}.attn_norm.weight", wt.vector(n_embd, 1.0))
        w.add_tensor(f"blk.{i}.attn_q.weight", wt.matrix(n_embd, n_embd))
        w.add_tensor(f"blk.{i}.attn_k.weight", wt.matrix(kv_dim, n_embd))
        w.add_tensor(f"blk.{i}.attn_v.weight", wt.matrix(kv_dim, n_embd))
        w.add_tensor(f"blk.{i}.attn_output.weight", wt.matrix(n_embd, n_embd))
        w.add_tensor(f"blk.{i}.ffn_norm.weight", wt.vector(n_embd, 1.0))
        w.add_tensor(f"blk.{i}.ffn_gate.weight", wt.matrix(n_ff, n_embd))
        w.add_tensor(f"blk.{i}.ffn_up.weight", wt.matrix(n_ff, n_embd))
        w.add_tensor(f"blk.{i}.ffn_down.weight", wt.matrix(n_embd, n_ff))
    _finish(w)
    return Path(path)


def write_bert_gguf(
    path: str | os.PathLike,
    *,
    seed: int = 0,
    n_embd: int = 64,
    n_ff: int = 128,
    n_layer: int = 2,
    n_head: int = 4,
    n_ctx: int = 128,
    words: Sequence[str] = WORDS,
    dtype: str = "f32",
    pooling: str = "mean",
    name: str = "tiny-bert",
    extra_kv: Mapping[str, object] | None = None,
) -> Path:
    """A tiny bert embedding model (cannot generate). WordPiece vocab, mean pooling (~0.5 MB)."""
    wt = _Weights(seed, dtype)
    tokens, types = wordpiece_vocab(words)
    arch = "bert"
    w = gguf.GGUFWriter(str(path), arch)
    w.add_type("model")
    w.add_name(name)
    w.add_file_type(1 if dtype == "f16" else 0)
    w.add_context_length(n_ctx)
    w.add_embedding_length(n_embd)
    w.add_block_count(n_layer)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_layer_norm_eps(1e-12)
    w.add_causal_attention(False)
    if POOLING.get(pooling) is not None:
        w.add_uint32(f"{arch}.pooling_type", POOLING[pooling])
    w.add_tokenizer_model("bert")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_type_count(2)
    w.add_pad_token_id(0)
    w.add_unk_token_id(100)
    w.add_bos_token_id(101)
    w.add_sep_token_id(102)
    w.add_mask_token_id(103)
    _add_extra_kv(w, extra_kv)

    n_vocab = len(tokens)
    w.add_tensor("token_embd.weight", wt.matrix(n_vocab, n_embd, scale=1.0))
    w.add_tensor("token_types.weight", wt.f32_matrix(2, n_embd))
    w.add_tensor("position_embd.weight", wt.f32_matrix(n_ctx, n_embd))
    w.add_tensor("token_embd_norm.weight", wt.vector(n_embd, 1.0))
    w.add_tensor("token_embd_norm.bias", wt.vector(n_embd))
    for i in range(n_layer):
        for t in ("attn_q", "attn_k", "attn_v", "attn_output"):
            w.add_tensor(f"blk.{i}.{t}.weight", wt.matrix(n_embd, n_embd))
            w.add_tensor(f"blk.{i}.{t}.bias", wt.vector(n_embd))
        w.add_tensor(f"blk.{i}.attn_output_norm.weight", wt.vector(n_embd, 1.0))
        w.add_tensor(f"blk.{i}.attn_output_norm.bias", wt.vector(n_embd))
        w.add_tensor(f"blk.{i}.ffn_up.weight", wt.matrix(n_ff, n_embd))
        w.add_tensor(f"blk.{i}.ffn_up.bias", wt.vector(n_ff))
        w.add_tensor(f"blk.{i}.ffn_down.weight", wt.matrix(n_embd, n_ff))
        w.add_tensor(f"blk.{i}.ffn_down.bias", wt.vector(n_embd))
        w.add_tensor(f"blk.{i}.layer_output_norm.weight", wt.vector(n_embd, 1.0))
        w.add_tensor(f"blk.{i}.layer_output_norm.bias", wt.vector(n_embd))
    _finish(w)
    return Path(path)


def write_lora_gguf(
    path: str | os.PathLike,
    *,
    seed: int = 0,
    n_embd: int = 64,
    n_ff: int = 128,
    n_layer: int = 2,
    rank: int = 4,
    alpha: float = 8.0,
    arch: str = "llama",
    targets: Sequence[str] = ("attn_q", "attn_v"),
    name: str = "tiny-lora",
) -> Path:
    """A LoRA adapter for write_llama_gguf(n_embd, n_ff, n_layer) with the same values.

    For a mismatched adapter pass another `arch` (e.g. 'gemma') or another n_embd than the base's.
    The adapter is F32; lora_b is small but non-zero so applying it visibly changes the output.
    """
    wt = _Weights(seed, "f32")
    shapes = {  # (n_out, n_in) of the base weight, numpy order
        "attn_q": (n_embd, n_embd), "attn_k": (n_embd, n_embd), "attn_v": (n_embd, n_embd),
        "attn_output": (n_embd, n_embd), "ffn_gate": (n_ff, n_embd), "ffn_up": (n_ff, n_embd),
        "ffn_down": (n_embd, n_ff),
    }
    w = gguf.GGUFWriter(str(path), arch)
    w.add_type("adapter")
    w.add_name(name)
    w.add_file_type(0)
    w.add_string("adapter.type", "lora")
    w.add_float32("adapter.lora.alpha", float(alpha))
    for i in range(n_layer):
        for t in targets:
            n_out, n_in = shapes[t]
            w.add_tensor(f"blk.{i}.{t}.weight.lora_a", wt.matrix(rank, n_in))
            w.add_tensor(f"blk.{i}.{t}.weight.lora_b", wt.matrix(n_out, rank, scale=0.05))
    _finish(w)
    return Path(path)
