"""Embedding inside the runner: tokenize, truncate, pack a few inputs per llama.cpp decode, read vectors.

Why not Llama.embed(): it truncates silently to n_batch, and its packing puts up to n_batch tokens of
many inputs into one decode. On CPU that is slower for small encoders (measured 2-3x slower for
all-MiniLM with n_batch=512: the masked attention over the packed batch costs more than it saves), yet
n_batch must be at least the longest input. So inputs are truncated to n_batch (num_batch, as Ollama's
runner does; an error with truncate=false) and this module packs only up to `pack_tokens` tokens
(default 32) per decode, which measured as fast as one input per decode for short texts while still
batching tiny ones. Vectors are returned raw
(float32, un-normalised) in input order; the parent normalises (the legacy endpoint wants them raw).

Models without pooling (completion models) have a generation context; for them embeddings are switched
on for the call and the last token's vector is used, one input per decode, as Ollama's runner did.
"""

from __future__ import annotations

import time

import llama_cpp
import numpy as np

from corral.service.engine.worker import RequestError

TOO_LONG = "the input length exceeds the context length"
EMIT_EVERY = 256  # vectors per message to the parent: few messages, yet a long request streams


class Embedder:
    def __init__(self, llama, limit: int, pooled: bool, pack_tokens: int = 32):
        self.llama = llama
        self.n_ctx = limit  # the longest input, in tokens
        self.pooled = pooled
        self.pack_tokens = max(1, pack_tokens)
        self.n_embd = llama.n_embd()
        self.n_seq_max = max(1, int(llama.context_params.n_seq_max)) if pooled else 1
        # Special tokens the tokenizer adds around every input ([CLS] ... [SEP], or <s> ...).
        empty = llama.tokenize(b"", add_bos=True, special=False)
        self.n_head = 1 if llama._model.add_bos_token() and empty[:1] == [llama.token_bos()] else 0
        self.n_tail = max(0, len(empty) - self.n_head)

    def tokenize(self, texts: list[str], truncate: bool) -> list[list[int]]:
        out = []
        for text in texts:
            tokens = self.llama.tokenize(text.encode("utf-8"), add_bos=True, special=False)
            if len(tokens) > self.n_ctx:
                if not truncate:
                    raise RequestError("INVALID_ARGUMENT", TOO_LONG)
                keep = self.n_ctx - self.n_tail
                tokens = tokens[:keep] + (tokens[len(tokens) - self.n_tail:] if self.n_tail else [])
            out.append(tokens)
        return out

    def run(self, payload: dict, emit, cancelled) -> dict:
        """payload: {"inputs": [str], "truncate": bool}. Emits {"offset", "vectors": ndarray} chunks."""
        start = time.perf_counter()
        tokens = self.tokenize(payload["inputs"], payload.get("truncate", True))
        count = sum(len(t) for t in tokens)
        pending: list[np.ndarray] = []
        offset = done = 0
        decode = self._decode_pooled if self.pooled else self._decode_last
        i = 0
        while i < len(tokens):
            if cancelled():
                raise RequestError("CANCELLED", "request canceled")
            j, total = i, 0
            while j < len(tokens) and j - i < self.n_seq_max and (j == i or total + len(tokens[j]) <= self.pack_tokens):
                total += len(tokens[j])
                j += 1
            pending.append(decode(tokens[i:j]))
            done += j - i
            i = j
            if done - offset >= EMIT_EVERY or i == len(tokens):
                emit({"offset": offset, "vectors": np.concatenate(pending)})
                pending, offset = [], done
        return {"prompt_eval_count": count, "prompt_eval_duration": int((time.perf_counter() - start) * 1e9)}

    def _decode_pooled(self, seqs: list[list[int]]) -> np.ndarray:
        llama = self.llama
        batch = llama._batch
        batch.reset()
        for seq_id, toks in enumerate(seqs):
            batch.add_sequence(toks, seq_id, True)
        llama._ctx.kv_cache_clear()
        self._decode(batch)
        out = np.empty((len(seqs), self.n_embd), dtype=np.float32)
        for seq_id in range(len(seqs)):
            ptr = llama_cpp.llama_get_embeddings_seq(llama.ctx, seq_id)
            if not ptr:
                raise RequestError("INTERNAL", "failed to get embeddings")
            out[seq_id] = np.ctypeslib.as_array(ptr, shape=(self.n_embd,))
        return out

    def _decode_last(self, seqs: list[list[int]]) -> np.ndarray:
        llama = self.llama
        out = np.empty((len(seqs), self.n_embd), dtype=np.float32)
        llama_cpp.llama_set_embeddings(llama.ctx, True)
        try:
            for row, toks in enumerate(seqs):
                llama._ctx.kv_cache_clear()
                for start in range(0, len(toks), llama.n_batch):  # a generation context's batch may be short
                    llama._batch.set_batch(toks[start : start + llama.n_batch], start, True)
                    self._decode(llama._batch)
                ptr = llama_cpp.llama_get_embeddings_ith(llama.ctx, -1)
                if not ptr:
                    raise RequestError("INTERNAL", "failed to get embeddings")
                out[row] = np.ctypeslib.as_array(ptr, shape=(self.n_embd,))
        finally:
            llama_cpp.llama_set_embeddings(llama.ctx, False)
            llama._ctx.kv_cache_clear()
            llama.reset()  # the generation prefix cache no longer matches the KV cache
        return out

    def _decode(self, batch) -> None:
        rc = llama_cpp.llama_decode(self.llama.ctx, batch.batch)
        if rc != 0:
            raise RequestError("INTERNAL", f"llama_decode failed with code {rc}")
