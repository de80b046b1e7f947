"""Embedding inside the runner: tokenize, truncate, pack a few inputs per llama.cpp decode, read vectors.

One "embed" request is one batch of the parent's batcher (service/engine/batcher.py): inputs of several
callers, each with its own truncate flag. A bad input fails alone: it gets an entry in `errors` and a
zero row, and the other inputs of the batch are embedded as usual (the batcher gives each caller its own
rows and errors). Vectors are returned raw (float32, un-normalised) in input order, all in the final
reply; the parent normalises (the legacy endpoint wants them raw).

Why not Llama.embed(): it truncates silently to n_batch, and its packing puts up to n_batch tokens of
many inputs into one decode. On CPU without flash attention that is slower for small encoders: the
masked attention over the packed batch costs more than it saves. Measured on all-MiniLM-L6-v2 F16, 2
threads, short texts (~11 tokens): tokens per decode 1 input 575 texts/s, 32 tokens 600, 48-96 610-620,
128 540, 256 430, 512 290. With flash attention the same batches run 590 (32), 700 (64), 840 (128),
870 (192-256), 850 (512): packing pays. So inputs are truncated to n_batch (num_batch, as Ollama's runner
does; an error with truncate=false) and this module packs up to `pack_tokens` tokens per decode
(default 32, CORRAL_EMBED_PACK_TOKENS), or FLASH_PACK_TOKENS when the context uses flash attention.

Models without pooling (completion models) have a generation context; for them embeddings are switched
on for the call and the last token's vector is used, one input per decode, as Ollama's runner did.
"""

from __future__ import annotations

import time

import llama_cpp
import numpy as np

from corral.service.engine.tokenizer import Tokenizer, cancelled_error
from corral.service.engine.worker import RequestError

TOO_LONG = "the input length exceeds the context length"
FLASH_PACK_TOKENS = 256  # tokens per decode with flash attention (measured best 192-256, see above)


class Embedder:
    def __init__(self, llama, limit: int, pooled: bool, pack_tokens: int = 32, tokenizer: Tokenizer | None = None):
        self.llama = llama
        self.tokenizer = tokenizer or Tokenizer(llama)
        self.n_ctx = limit  # the longest input, in tokens
        self.pooled = pooled
        flash = getattr(llama.context_params, "flash_attn_type", 0)  # -1 auto, 0 off, 1 on
        self.pack_tokens = max(1, pack_tokens, FLASH_PACK_TOKENS if flash != 0 else 0)
        self.pack_tokens = min(self.pack_tokens, max(limit, 1))
        self.n_embd = llama.n_embd()
        self.n_seq_max = max(1, int(llama.context_params.n_seq_max)) if pooled else 1
        # Special tokens the tokenizer adds around every input ([CLS] ... [SEP], or <s> ...).
        empty = llama.tokenize(b"", add_bos=True, special=False)
        self.n_head = 1 if llama._model.add_bos_token() and empty[:1] == [llama.token_bos()] else 0
        self.n_tail = max(0, len(empty) - self.n_head)
        self.head, self.tail = empty[: self.n_head], empty[self.n_head :]
        self.n_vocab = llama.n_vocab()

    def tokenize(self, text: str | list[int], truncate: bool, cancelled=None) -> list[int]:
        """The input's tokens, cut to the limit (keeping the closing special tokens) when truncate is set;
        RequestError when it is too long and truncate is not set. An input of token ids gets the same
        special tokens around it as a text; an id outside the vocabulary is an error. A text is only
        tokenized until it is known to be too long (tokenizer.py): the tokens kept are its first ones."""
        if isinstance(text, list):
            bad = next((t for t in text if not 0 <= t < self.n_vocab), None)
            if bad is not None:
                raise RequestError("INVALID_ARGUMENT", f"invalid token id {bad}: the vocabulary has {self.n_vocab}")
            tokens = self.head + text + self.tail
        else:
            tokens = self.tokenizer.tokenize(text, True, False, limit=self.n_ctx, cancelled=cancelled)
        if len(tokens) > self.n_ctx:
            if not truncate:
                raise RequestError("INVALID_ARGUMENT", TOO_LONG)
            tokens = tokens[: self.n_ctx - self.n_tail] + self.tail
        return tokens

    def run(self, payload: dict, emit, cancelled) -> dict:
        """payload: {"inputs": [str | [int]], "truncate": bool | [bool] (one per input; default True)}.

        Returns {"vectors": (n, n_embd) float32, "counts": [tokens per input], "errors": {index: (code,
        text)}, "prompt_eval_count", "prompt_eval_duration"}; a failed input has a zero row and count 0.
        Nothing is emitted: a batch is small (the batcher bounds it), so one reply carries it whole.
        """
        start = time.perf_counter()
        inputs = payload["inputs"]
        flags = payload.get("truncate", True)
        if isinstance(flags, bool):
            flags = [flags] * len(inputs)
        vectors = np.zeros((len(inputs), self.n_embd), dtype=np.float32)
        counts = [0] * len(inputs)
        errors: dict[int, tuple[str, str]] = {}
        rows, tokens = [], []
        for i, (text, truncate) in enumerate(zip(inputs, flags, strict=True)):
            try:
                tokens.append(self.tokenize(text, truncate, cancelled))
                rows.append(i)
            except RequestError as exc:
                errors[i] = (exc.code, exc.message)
        decode = self._decode_pooled if self.pooled else self._decode_last
        i = 0
        while i < len(tokens):
            if cancelled():
                raise cancelled_error()
            j, total = i, 0
            while j < len(tokens) and j - i < self.n_seq_max and (j == i or total + len(tokens[j]) <= self.pack_tokens):
                total += len(tokens[j])
                j += 1
            vectors[rows[i:j]] = decode(tokens[i:j], cancelled)
            i = j
        for row, toks in zip(rows, tokens, strict=True):
            counts[row] = len(toks)
        return {"vectors": vectors, "counts": counts, "errors": errors, "prompt_eval_count": sum(counts),
                "prompt_eval_duration": int((time.perf_counter() - start) * 1e9)}

    def _decode_pooled(self, seqs: list[list[int]], cancelled) -> np.ndarray:
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

    def _decode_last(self, seqs: list[list[int]], cancelled) -> np.ndarray:
        """One input at a time, in n_batch chunks; an input of num_ctx tokens can take long (attention
        grows with the context), so cancellation is checked between chunks."""
        llama = self.llama
        out = np.empty((len(seqs), self.n_embd), dtype=np.float32)
        llama_cpp.llama_set_embeddings(llama.ctx, True)
        try:
            for row, toks in enumerate(seqs):
                llama._ctx.kv_cache_clear()
                for start in range(0, len(toks), llama.n_batch):  # a generation context's batch may be short
                    if start and cancelled():
                        raise cancelled_error()
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
