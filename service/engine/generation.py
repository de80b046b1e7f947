"""Text generation inside the runner: up to num_parallel requests decoded together in one llama.cpp batch.

Why llama.cpp's low-level API instead of Llama.generate() or create_completion(): Llama.generate() drives
one sequence, so serving OLLAMA_NUM_PARALLEL requests with it would mean N copies of the model or one
request at a time. Here the runner's context is made with n_seq_max = N and a unified KV cache of
N * num_ctx cells (as Ollama loads its runners), each request gets a slot (a sequence id, num_ctx tokens
of its own), and every step is one llama_decode of one batch holding the next token of every generating
sequence plus chunks of prompts still being read (decode tokens first, then the shortest prompts, up to
n_batch tokens in all), so a long prompt is read in chunks between the other sequences' tokens and
prompts instead of stalling them. Each request then samples from its own logits row with its own
llama.cpp sampler chain (penalties, JSON grammar, top-k, typical, top-p, min-p, temperature, a dist
sampler seeded with its seed: the chain Llama.generate() built), so options, grammars and seeds stay per
request.

Ollama's semantics are kept per request: done_reason ("stop" for an end-of-generation token or a stop
string, "length" for num_predict or a full context), prompt and eval counts and durations, the token
`context` returned to the client, truncation with num_keep, a cancel check at every step, and holding back
text that might be the beginning of a stop string so that a stop string is never streamed. A free slot
whose cached tokens share the longest prefix with a new prompt is picked, and that prefix is not evaluated
again (as Llama.generate() reused its single cache); a seeded request evaluates its whole prompt so that
its text depends only on its seed and prompt. Idle slots forget their tokens once a request starts in
another slot (see _admit: idle cells in the shared cache slow the running sequences down).
"""

from __future__ import annotations

import codecs
import ctypes
import itertools
import os
import time
from collections import deque
from collections.abc import Callable

import llama_cpp
from llama_cpp.llama_grammar import JSON_GBNF, LlamaGrammar

from corral.service.engine.logprobs import logprobs_at
from corral.service.engine.tokenizer import Tokenizer
from corral.service.engine.worker import RequestError

TOO_LONG = "the input length exceeds the context length"
# Text of one request is sent to the parent at most this often (the first piece at once): a message per
# token costs the server more than a token of a small model takes (pipe, gRPC, client), and would slow
# every stream on a busy machine; 20 ms is below what a reader of a stream notices.
FLUSH_SECONDS = 0.02

Reply = Callable[[tuple], None]


def make_grammar(fmt: str | None):
    """`format`: "json" or a JSON schema (JSON text) -> a llama.cpp grammar; None when unset."""
    if not fmt:
        return None
    try:
        if fmt == "json":
            return LlamaGrammar.from_string(JSON_GBNF, verbose=False)
        grammar = LlamaGrammar.from_json_schema(fmt, verbose=False)
    except Exception as exc:
        raise RequestError("INVALID_ARGUMENT", f"invalid JSON schema in format: {exc}") from None
    empty = empty_rules(grammar._grammar)
    if empty:
        # A schema that allows no value ({"enum": []}, {"anyOf": []}, a required property of that kind)
        # converts to a rule with no alternatives, on which llama.cpp's sampler crashes the runner.
        raise RequestError("INVALID_ARGUMENT", f"invalid JSON schema in format: no value satisfies it "
                                               f"(rule {empty[0]!r} has no alternatives)")
    return grammar


def empty_rules(gbnf: str) -> list[str]:
    """Names of the GBNF rules whose body is empty (what the schema converter writes for "nothing")."""
    out = []
    for line in gbnf.splitlines():
        name, sep, body = line.partition("::=")
        if sep and not body.strip():
            out.append(name.strip())
    return out


def held_back(text: str, stops: list[str]) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of a stop string."""
    best = 0
    for stop in stops:
        for n in range(min(len(stop) - 1, len(text)), best, -1):
            if text.endswith(stop[:n]):
                best = n
                break
    return best


def common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


class Sampler:
    """One request's llama.cpp sampler chain, built as Llama.generate() built it: repetition penalties,
    the format grammar, then greedy (temperature 0) or top-k, typical, top-p, min-p, temperature and a
    seeded random pick. The chain keeps the request's own state (penalty history, grammar, RNG)."""

    def __init__(self, model, opts: dict, grammar, seed: int, last_n: int):
        vocab = llama_cpp.llama_model_get_vocab(model)
        self.chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
        self._add(llama_cpp.llama_sampler_init_penalties(
            llama_cpp.llama_vocab_n_tokens(vocab), last_n, float(opts.get("repeat_penalty", 1.1)),
            float(opts.get("frequency_penalty", 0.0)), float(opts.get("presence_penalty", 0.0))))
        if grammar is not None:
            g = llama_cpp.llama_sampler_init_grammar(vocab, grammar._grammar.encode(), grammar._root.encode())
            if not g:
                self.close()
                raise RequestError("INVALID_ARGUMENT", "invalid JSON schema in format: grammar does not parse")
            self._add(g)
        temp = float(opts.get("temperature", 0.8))
        if temp < 0:
            self._add(llama_cpp.llama_sampler_init_dist(seed))
        elif temp == 0:
            self._add(llama_cpp.llama_sampler_init_greedy())
        else:
            self._add(llama_cpp.llama_sampler_init_top_k(int(opts.get("top_k", 40))))
            self._add(llama_cpp.llama_sampler_init_typical(float(opts.get("typical_p", 1.0)), 1))
            self._add(llama_cpp.llama_sampler_init_top_p(float(opts.get("top_p", 0.9)), 1))
            self._add(llama_cpp.llama_sampler_init_min_p(float(opts.get("min_p", 0.0)), 1))
            self._add(llama_cpp.llama_sampler_init_temp(temp))
            self._add(llama_cpp.llama_sampler_init_dist(seed))

    def _add(self, sampler) -> None:
        llama_cpp.llama_sampler_chain_add(self.chain, sampler)  # the chain owns it from now on

    def sample(self, ctx, idx: int) -> int:
        """Samples from the logits of batch row `idx` and records the token in the chain's state."""
        return int(llama_cpp.llama_sampler_sample(self.chain, ctx, idx))

    def close(self) -> None:
        if self.chain:
            llama_cpp.llama_sampler_free(self.chain)
            self.chain = None


class Stream:
    """One generate request: its tokens, sampler, stop strings, text streaming and metrics."""

    shift = True  # context shift allowed (Generator.submit sets both from the request)
    num_keep = 0

    def __init__(self, req_id: int, tokens: list[int], opts: dict, order: int):
        self.req_id = req_id
        self.tokens = tokens
        self.order = order
        seed = int(opts.get("seed", -1))
        self.seeded = seed >= 0
        self.seed = seed & 0xFFFFFFFF if self.seeded else int.from_bytes(os.urandom(4), "little") & 0x7FFFFFFF
        self.stops = [s for s in opts.get("stop") or [] if s]
        self.num_predict = int(opts.get("num_predict", -1))
        self.sampler: Sampler | None = None
        self.generated: list[int] = []
        self.decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self.pending = ""
        self.reason = "stop"
        self.start = self.first = 0.0
        self.out: list[str] = []
        self.flushed = 0.0
        # logprobs: the entries of tokens not sent yet (None: not asked); top_logprobs: alternatives each
        self.logprobs: list[dict] | None = None
        self.top_logprobs = 0

    def accept(self, token: int, eog: bool, piece: bytes, n_ctx: int, reply: Reply) -> bool:
        """Takes one sampled token; True when the request is finished (its reason set)."""
        now = time.perf_counter()
        if not self.first:
            self.first = now
        if eog:
            self.reason = "stop"
            return True
        self.generated.append(token)
        self.pending += self.decoder.decode(piece)
        stops = self.stops
        if stops:
            hits = [self.pending.find(s) for s in stops if s in self.pending]
            if hits:
                self.pending = self.pending[: min(hits)]
                self.reason = "stop"
                return True
        keep = held_back(self.pending, stops) if stops else 0
        if len(self.pending) > keep:
            self.out.append(self.pending[: len(self.pending) - keep])
            self.pending = self.pending[len(self.pending) - keep:]
            if now - self.flushed >= FLUSH_SECONDS:
                self.flush(reply, now)
        if 0 < self.num_predict <= len(self.generated):  # a full context is the generator's (_shift)
            self.reason = "length"
            return True
        return False

    def flush(self, reply: Reply, now: float) -> None:
        if self.logprobs:  # with logprobs an item is {"text", "logprobs"} (see logprobs.py)
            reply(("item", self.req_id, {"text": "".join(self.out), "logprobs": self.logprobs}))
            self.out.clear()
            self.logprobs = []
            self.flushed = now
        elif self.out:
            reply(("item", self.req_id, "".join(self.out)))
            self.out.clear()
            self.flushed = now

    def finish(self, reply: Reply) -> dict:
        """Sends the text still held back (unless cancelled) and returns the final metrics."""
        end = time.perf_counter()
        if self.reason != "cancel":
            self.pending += self.decoder.decode(b"", final=True)
            if self.pending:
                self.out.append(self.pending)
            self.flush(reply, end)
        first = self.first or end
        return {
            "done_reason": self.reason,
            "prompt_eval_count": len(self.tokens),
            "prompt_eval_duration": int((first - self.start) * 1e9),
            "eval_count": len(self.generated),
            "eval_duration": int((end - first) * 1e9),
            "context": self.tokens + self.generated,
        }

    def close(self) -> None:
        if self.sampler is not None:
            self.sampler.close()
            self.sampler = None


class Slot:
    """One sequence of the context. Invariant while serving: cached + feed == stream.tokens + generated,
    less what a context shift dropped (Generator._shift)."""

    def __init__(self, seq_id: int):
        self.seq_id = seq_id
        self.cached: list[int] = []  # tokens whose keys and values are in the KV cache, positions 0..
        self.feed: list[int] = []  # tokens still to decode (a prompt's rest, or the last sampled token)
        self.stream: Stream | None = None
        self.order = 0  # arrival order of its request
        self.last_used = 0.0


class Generator:
    """Serves generate requests on up to `n_parallel` sequences of one llama.cpp context.

    The worker calls submit() for each new request, step() while busy, cancel() for cancels, and
    reset_cache() after anything else (an embedding) cleared the KV cache. Replies go out through `reply`
    as the runner protocol's ("item" | "done" | "error", req_id, ...) tuples.
    """

    def __init__(self, llama, n_ctx: int, reply: Reply, n_parallel: int = 1, tokenizer: Tokenizer | None = None):
        self.llama = llama
        self.tokenizer = tokenizer or Tokenizer(llama)
        self.n_ctx = n_ctx  # per sequence
        self.reply = reply
        self.n_batch = int(llama.n_batch)
        self.vocab = llama_cpp.llama_model_get_vocab(llama.model)
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(self.vocab)
        self.memory = llama_cpp.llama_get_memory(llama.ctx)
        self.slots = [Slot(i) for i in range(max(1, n_parallel))]
        self.waiting: deque[Stream] = deque()
        self.batch = llama_cpp.llama_batch_init(self.n_batch, 0, 1)
        self._order = itertools.count()
        self._buf = ctypes.create_string_buffer(256)

    @property
    def busy(self) -> bool:
        return bool(self.waiting) or any(slot.stream is not None for slot in self.slots)

    def piece(self, token: int) -> bytes:
        """The bytes of one token, control tokens included (as Ollama's runner renders them, so a stop
        string such as "<|im_end|>" matches even when the vocab does not mark that token end-of-turn).
        llama-cpp-python's token_to_piece returns its whole padded buffer, hence this."""
        n = llama_cpp.llama_token_to_piece(self.vocab, token, self._buf, len(self._buf), 0, True)
        if n < 0:
            self._buf = ctypes.create_string_buffer(-n)
            n = llama_cpp.llama_token_to_piece(self.vocab, token, self._buf, len(self._buf), 0, True)
        return self._buf.raw[:n]

    def prompt_tokens(self, payload: dict, opts: dict, cancelled: Callable[[], bool] | None = None) -> list[int]:
        """The request's tokens: its context, then its prompt's, cut to n_ctx - 1 keeping num_keep at the
        start (Ollama's truncation). With truncate=false the prompt is tokenized only until it is known to
        be too long (tokenizer.py), so a huge one is refused at once."""
        context = list(payload.get("context") or [])
        prompt = payload.get("prompt") or ""
        add_bos = not context and payload.get("add_bos", True)
        bad = next((t for t in context if not 0 <= t < self.n_vocab), None)
        if bad is not None:  # llama_decode would fail on it ("llama_decode returned -1")
            raise RequestError("INVALID_ARGUMENT", f"invalid context token {bad}: the vocabulary has {self.n_vocab}")
        limit = self.n_ctx - 1  # room for at least one generated token
        refuse = payload.get("truncate") is False
        most = max(limit - len(context), 0) if refuse else None
        prompt_tokens = (self.tokenizer.tokenize(prompt, bool(add_bos), True, limit=most, cancelled=cancelled)
                         if prompt else [])
        tokens = context + prompt_tokens
        if len(tokens) > limit:
            if refuse:
                raise RequestError("INVALID_ARGUMENT", TOO_LONG)
            keep = max(0, min(int(opts.get("num_keep", 4)), limit // 2))
            tokens = tokens[:keep] + tokens[len(tokens) - (limit - keep):]
        return tokens

    # -- requests ------------------------------------------------------------------------------------

    def submit(self, req_id: int, payload: dict, cancelled: Callable[[], bool] | None = None) -> None:
        """Queues one request (payload: prompt, context, options, format, truncate, add_bos, logprobs,
        top_logprobs); raises RequestError for a request that cannot run, CANCELLED when cancelled()
        turns true while its prompt is tokenized. It starts at the next step with a free slot."""
        opts = payload.get("options") or {}
        tokens = self.prompt_tokens(payload, opts, cancelled)
        if not tokens:
            raise RequestError("INVALID_ARGUMENT", "prompt is empty")
        stream = Stream(req_id, tokens, opts, next(self._order))
        # Context shift (see _shift): `shift: false` ends the request at a full context instead; num_keep
        # tokens at the start are never dropped (negative: the whole prompt), at most n_ctx - 1.
        stream.shift = payload.get("shift") is not False
        keep = int(opts.get("num_keep", 4))
        stream.num_keep = min(len(tokens) if keep < 0 else keep, self.n_ctx - 1)
        last_n = int(opts.get("repeat_last_n", 64))
        if payload.get("logprobs"):
            stream.logprobs, stream.top_logprobs = [], max(0, int(payload.get("top_logprobs") or 0))
        stream.sampler = Sampler(self.llama.model, opts, make_grammar(payload.get("format")), stream.seed,
                                 self.n_ctx if last_n < 0 else last_n)
        stream.start = time.perf_counter()
        self.waiting.append(stream)

    def cancel(self, req_ids: set[int]) -> None:
        """Stops the given requests: queued ones get a CANCELLED error, running ones end (reason cancel)."""
        for stream in [s for s in self.waiting if s.req_id in req_ids]:
            self.waiting.remove(stream)
            stream.close()
            self.reply(("error", stream.req_id, "CANCELLED", "request canceled"))
        for slot in self.slots:
            if slot.stream is not None and slot.stream.req_id in req_ids:
                slot.stream.reason = "cancel"
                self._finish(slot)

    def fail_all(self, code: str, message: str) -> None:
        """Ends every request with an error and forgets the cache (after an unexpected failure)."""
        for stream in list(self.waiting):
            stream.close()
            self.reply(("error", stream.req_id, code, message))
        self.waiting.clear()
        for slot in self.slots:
            if slot.stream is not None:
                self._fail(slot, code, message)
        self.reset_cache()

    def reset_cache(self) -> None:
        """The KV cache was cleared (or must be): running sequences are evaluated again from the start."""
        llama_cpp.llama_memory_clear(self.memory, True)
        for slot in self.slots:
            slot.feed = slot.cached + slot.feed if slot.stream is not None else []
            slot.cached = []

    def close(self) -> None:
        for stream in self.waiting:
            stream.close()
        for slot in self.slots:
            if slot.stream is not None:
                slot.stream.close()
        if self.batch is not None:
            llama_cpp.llama_batch_free(self.batch)
            self.batch = None

    # -- the decode loop -----------------------------------------------------------------------------

    def _admit(self) -> None:
        """Moves queued requests into free slots, each into the slot sharing the longest prefix.

        A slot that stays idle while a request starts elsewhere forgets its tokens: in the unified KV
        cache they would widen every later step's attention for the running sequences (measured here:
        +9 % per token for one sequence next to three idle ones of 140 tokens). So a finished request's
        tokens serve the next request that shares their prefix (a chat's next turn, a `context`) when it
        comes before any other request starts.
        """
        admitted = False
        while self.waiting:
            free = [slot for slot in self.slots if slot.stream is None]
            if not free:
                break
            stream = self.waiting.popleft()
            tokens = stream.tokens
            shared = {id(s): 0 if stream.seeded else common_prefix(s.cached, tokens) for s in free}
            slot = max(free, key=lambda s: (shared[id(s)], -s.last_used))
            keep = min(shared[id(slot)], len(tokens) - 1)  # the last prompt token is decoded for its logits
            if not llama_cpp.llama_memory_seq_rm(self.memory, slot.seq_id, keep, -1):
                keep = 0  # a model whose memory cannot drop a suffix (recurrent): start over
                llama_cpp.llama_memory_seq_rm(self.memory, slot.seq_id, 0, -1)
            slot.cached = slot.cached[:keep]
            slot.feed = tokens[keep:]
            slot.stream = stream
            slot.order = stream.order
            stream.start = time.perf_counter()
            admitted = True
        if admitted:
            for slot in self.slots:
                if slot.stream is None and slot.cached:
                    llama_cpp.llama_memory_seq_rm(self.memory, slot.seq_id, 0, -1)
                    slot.cached = []

    def step(self) -> None:
        """One llama_decode for every running sequence: the next token of each generating one, then
        prompt chunks of the others while the batch has room; then each samples from its own logits."""
        self._admit()
        running = [slot for slot in self.slots if slot.stream is not None]
        if not running:
            return
        # Generating sequences first, the one waiting longest first (when the batch is smaller than the
        # number of sequences, they take turns); then prompts in n_batch chunks, the shortest rest first:
        # a short prompt is read at the next step instead of after every chunk of a long one that came
        # first (a prompt of num_ctx tokens can take minutes on CPU), and the long one gets what is left.
        running.sort(key=lambda s: (len(s.feed) > 1, s.last_used if len(s.feed) <= 1 else len(s.feed), s.order))
        batch = self.batch
        n = 0
        parts: list[tuple[Slot, int, int]] = []  # slot, tokens taken, batch row of its logits (-1: none)
        for slot in running:
            take = min(len(slot.feed), self.n_batch - n)
            if take <= 0:
                break
            pos = len(slot.cached)
            seq = slot.seq_id
            for i in range(take):
                batch.token[n + i] = slot.feed[i]
                batch.pos[n + i] = pos + i
                batch.n_seq_id[n + i] = 1
                batch.seq_id[n + i][0] = seq
                batch.logits[n + i] = False
            n += take
            row = -1
            if take == len(slot.feed):
                row = n - 1
                batch.logits[row] = True
            parts.append((slot, take, row))
        batch.n_tokens = n
        rc = llama_cpp.llama_decode(self.llama.ctx, batch)
        if rc != 0:
            for slot, _, _ in parts:
                self._fail(slot, "INTERNAL", f"llama_decode failed with code {rc}")
            return
        now = time.perf_counter()
        for slot, take, row in parts:
            slot.cached.extend(slot.feed[:take])
            slot.feed = slot.feed[take:]
            slot.last_used = now
            stream = slot.stream
            if row < 0 or stream is None or stream.sampler is None:
                continue
            token = stream.sampler.sample(self.llama.ctx, row)
            eog = bool(llama_cpp.llama_vocab_is_eog(self.vocab, token))
            if stream.logprobs is not None and not eog:
                stream.logprobs.append(logprobs_at(self.llama.ctx, row, self.n_vocab, token, stream.top_logprobs,
                                                   self.piece))
            if stream.accept(token, eog, b"" if eog else self.piece(token), self.n_ctx, self.reply):
                self._finish(slot)
            else:
                slot.feed = [token]
                if len(slot.cached) + 1 > self.n_ctx and not self._shift(slot):
                    stream.reason = "length"
                    self._finish(slot)

    def _shift(self, slot: Slot) -> bool:
        """The sequence's context is full: drop the oldest half of what follows its first num_keep tokens
        from its KV cells and move the rest back (Ollama's context shift), so generation goes on until
        num_predict. Only this sequence's cells move (llama_memory_seq_rm/seq_add on its seq id). A
        memory that cannot shift positions has the kept tokens evaluated again. False when the request
        asked for no shift (or nothing can be dropped): it then ends with "length"."""
        stream = slot.stream
        if stream is None or not stream.shift:
            return False
        keep, n = stream.num_keep, len(slot.cached)
        discard = max(max((self.n_ctx - keep) // 2, 1) - (self.n_ctx - n), 0)  # Ollama's ShiftDiscard
        if discard <= 0 or keep + discard > n:
            return False
        kept = slot.cached[:keep] + slot.cached[keep + discard:]
        if llama_cpp.llama_memory_can_shift(self.memory) and llama_cpp.llama_memory_seq_rm(
                self.memory, slot.seq_id, keep, keep + discard):
            llama_cpp.llama_memory_seq_add(self.memory, slot.seq_id, keep + discard, -1, -discard)
            slot.cached = kept
        else:
            llama_cpp.llama_memory_seq_rm(self.memory, slot.seq_id, 0, -1)
            slot.cached, slot.feed = [], kept + slot.feed
        return True

    def _finish(self, slot: Slot) -> None:
        stream = slot.stream
        assert stream is not None
        slot.stream = None
        slot.feed = []
        stream.close()
        self.reply(("done", stream.req_id, stream.finish(self.reply)))

    def _fail(self, slot: Slot, code: str, message: str) -> None:
        stream = slot.stream
        slot.stream = None
        slot.feed = []
        slot.cached = []
        llama_cpp.llama_memory_seq_rm(self.memory, slot.seq_id, 0, -1)
        if stream is not None:
            stream.close()
            self.reply(("error", stream.req_id, code, message))
