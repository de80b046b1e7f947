"""Per-token log probabilities for `logprobs` / `top_logprobs`, computed in the runner from llama.cpp's logits.

Why from the raw logits: Ollama (through llama.cpp's server) reports the model's own distribution at each
position, the log-softmax of the logits over the whole vocabulary, before repetition penalties,
grammars, top-k/top-p or temperature shape the pick. That is also what llama-cpp-python reports
(Llama.logits_to_logprobs), so the two agree for the same tokens. The sampler copies the logits before it
changes anything, so reading the row after sampling sees them untouched.

Runs in the runner child only (it imports llama_cpp); the work is one pass over the vocabulary per
token, done only for requests that ask.
"""

from __future__ import annotations

import ctypes

import llama_cpp
import numpy as np


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """log p over the vocabulary, computed in float64 so that large vocabularies do not lose digits."""
    x = logits.astype(np.float64)
    x -= x.max()
    return x - np.log(np.exp(x).sum())


def token_entry(token: int, logprob: float, piece: bytes) -> dict:
    """One {"token", "logprob", "bytes"} entry (Ollama's TokenLogprob)."""
    return {"token": piece.decode("utf-8", "replace"), "logprob": float(logprob), "bytes": piece}


def logprobs_at(ctx, row: int, n_vocab: int, token: int, top: int, piece) -> dict:
    """The entry of the sampled `token` at batch row `row`, with the `top` most likely tokens (most
    likely first, ties by token id) when top > 0. `piece(token) -> bytes` renders a token."""
    ptr = llama_cpp.llama_get_logits_ith(ctx, row)
    logits = np.ctypeslib.as_array(ctypes.cast(ptr, ctypes.POINTER(ctypes.c_float)), shape=(n_vocab,))
    lp = log_softmax(logits)
    entry = token_entry(token, lp[token], piece(token))
    if top > 0:
        k = min(top, n_vocab)
        candidates = np.argpartition(-lp, k - 1)[:k].tolist()
        best = sorted(candidates, key=lambda t: (-lp[t], t))
        entry["top_logprobs"] = [token_entry(t, lp[t], piece(t)) for t in best]
    return entry
