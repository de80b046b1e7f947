"""Text generation inside the runner: tokenize, fit the context, sample with Ollama's options, stream.

Why a hand-written loop over Llama.generate() instead of create_completion(): Ollama's semantics need
control that create_completion hides: done_reason ("stop" for an end-of-generation token or a stop
string, "length" for num_predict or a full context), prompt and eval token counts and durations
measured separately, the token `context` returned to the client, a cancel check between tokens (the
parent sends "cancel" when the client goes away), JSON grammars for `format`, and holding back text
that might be the beginning of a stop string so that a stop string is never streamed.
"""

from __future__ import annotations

import codecs
import ctypes
import os
import time

import llama_cpp
from llama_cpp.llama_grammar import JSON_GBNF, LlamaGrammar

from corral.service.engine.worker import RequestError

TOO_LONG = "the input length exceeds the context length"


def make_grammar(fmt: str | None):
    """`format`: "json" or a JSON schema (JSON text) -> a llama.cpp grammar; None when unset."""
    if not fmt:
        return None
    try:
        if fmt == "json":
            return LlamaGrammar.from_string(JSON_GBNF, verbose=False)
        return LlamaGrammar.from_json_schema(fmt, verbose=False)
    except Exception as exc:
        raise RequestError("INVALID_ARGUMENT", f"invalid JSON schema in format: {exc}") from None


def held_back(text: str, stops: list[str]) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of a stop string."""
    best = 0
    for stop in stops:
        for n in range(min(len(stop) - 1, len(text)), best, -1):
            if text.endswith(stop[:n]):
                best = n
                break
    return best


class Generator:
    def __init__(self, llama, n_ctx: int):
        self.llama = llama
        self.n_ctx = n_ctx
        self.vocab = llama_cpp.llama_model_get_vocab(llama.model)
        self._buf = ctypes.create_string_buffer(256)

    def piece(self, token: int) -> bytes:
        """The bytes of one token, control tokens included (as Ollama's runner renders them, so a stop
        string such as "<|im_end|>" matches even when the vocab does not mark that token end-of-turn).
        llama-cpp-python's token_to_piece returns its whole padded buffer, hence this."""
        n = llama_cpp.llama_token_to_piece(self.vocab, token, self._buf, len(self._buf), 0, True)
        if n < 0:
            self._buf = ctypes.create_string_buffer(-n)
            n = llama_cpp.llama_token_to_piece(self.vocab, token, self._buf, len(self._buf), 0, True)
        return self._buf.raw[:n]

    def prompt_tokens(self, payload: dict, opts: dict) -> list[int]:
        context = list(payload.get("context") or [])
        prompt = payload.get("prompt") or ""
        add_bos = not context and payload.get("add_bos", True)
        prompt_tokens = self.llama.tokenize(prompt.encode("utf-8"), add_bos=add_bos, special=True) if prompt else []
        tokens = context + prompt_tokens
        limit = self.n_ctx - 1  # room for at least one generated token
        if len(tokens) > limit:
            if payload.get("truncate") is False:
                raise RequestError("INVALID_ARGUMENT", TOO_LONG)
            keep = max(0, min(int(opts.get("num_keep", 4)), limit // 2))
            tokens = tokens[:keep] + tokens[len(tokens) - (limit - keep):]
        return tokens

    def run(self, payload: dict, emit, cancelled) -> dict:
        """payload: prompt, context, options (sampling), format, truncate. Emits text pieces."""
        llama = self.llama
        opts = payload.get("options") or {}
        tokens = self.prompt_tokens(payload, opts)
        if not tokens:
            raise RequestError("INVALID_ARGUMENT", "prompt is empty")
        grammar = make_grammar(payload.get("format"))
        seed = int(opts.get("seed", -1))
        if seed >= 0:
            llama.reset()  # evaluate the whole prompt again so a seed reproduces the same text exactly
            llama.set_seed(seed & 0xFFFFFFFF)
        else:
            llama.set_seed(int.from_bytes(os.urandom(4), "little") & 0x7FFFFFFF)
        last_n = int(opts.get("repeat_last_n", 64))
        llama.last_n_tokens_size = self.n_ctx if last_n < 0 else last_n
        stops = [s for s in opts.get("stop") or [] if s]
        num_predict = int(opts.get("num_predict", -1))

        start = time.perf_counter()
        first = None
        generated: list[int] = []
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        pending = ""
        reason = "stop"
        stream = llama.generate(
            tokens,
            top_k=int(opts.get("top_k", 40)),
            top_p=float(opts.get("top_p", 0.9)),
            min_p=float(opts.get("min_p", 0.0)),
            typical_p=float(opts.get("typical_p", 1.0)),
            temp=float(opts.get("temperature", 0.8)),
            repeat_penalty=float(opts.get("repeat_penalty", 1.1)),
            frequency_penalty=float(opts.get("frequency_penalty", 0.0)),
            presence_penalty=float(opts.get("presence_penalty", 0.0)),
            grammar=grammar,
            reset=True,
        )
        try:
            for token in stream:
                if first is None:
                    first = time.perf_counter()
                if llama_cpp.llama_vocab_is_eog(self.vocab, token):
                    break
                generated.append(token)
                pending += decoder.decode(self.piece(token))
                hits = [pending.find(s) for s in stops if s in pending]
                if hits:
                    pending = pending[: min(hits)]
                    break
                keep = held_back(pending, stops) if stops else 0
                if len(pending) > keep:
                    emit(pending[: len(pending) - keep])
                    pending = pending[len(pending) - keep:]
                if cancelled():
                    reason = "cancel"
                    break
                if 0 < num_predict <= len(generated) or llama.n_tokens + 1 >= self.n_ctx:
                    reason = "length"
                    break
        finally:
            stream.close()
        if reason != "cancel":
            pending += decoder.decode(b"", final=True)
            if pending:
                emit(pending)
        end = time.perf_counter()
        first = first or end
        return {
            "done_reason": reason,
            "prompt_eval_count": len(tokens),
            "prompt_eval_duration": int((first - start) * 1e9),
            "eval_count": len(generated),
            "eval_duration": int((end - first) * 1e9),
            "context": tokens + generated,
        }
