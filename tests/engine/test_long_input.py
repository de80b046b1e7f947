"""Huge inputs in the runner: tokenized in bounded pieces with the tokens of one call, in time linear in
their length (and bounded by the context where only the first tokens matter), stoppable, never crashing
the runner; a short prompt is not queued behind a long one.

Real llama.cpp vocabularies (SentencePiece and BPE llama models, a WordPiece bert) and real runner child
processes on tiny GGUF models. See service/engine/tokenizer.py for why.
"""

import random
import sys
import threading
import time
from pathlib import Path

import gguf
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import tests.gguf_models as gm  # noqa: E402
from corral.service.engine.runner import Runner  # noqa: E402
from corral.store.errors import Cancelled, InvalidArgument  # noqa: E402

TOO_LONG = "the input length exceeds the context length"
WORDS = "the sky is blue and the sun is red hello world cat dog é 漢字 🙂 123 4567 !! ?? ... (x) don't it's".split()
SEPARATORS = (" ", " ", " ", "\n", "  ", "\n\n", ", ", ". ", "\t", " \n")


def text_of(n: int, seed: int = 1, separators=SEPARATORS, special: str = "") -> str:
    rng = random.Random(seed)
    out, size = [], 0
    while size < n:
        word = rng.choice(WORDS) if not special or rng.random() > 0.02 else special
        out.append(word + rng.choice(separators))
        size += len(out[-1])
    return "".join(out)[:n]


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte-level alphabet (what a BPE vocab spells bytes with)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + len(cs) - 188)  # 188 printable bytes map to themselves; the rest from 256 on
    return {b: chr(c) for b, c in zip(bs, cs, strict=True)}


def write_bpe_gguf(path: Path, pre: str) -> Path:
    """A tiny llama model with a GPT-2 style byte-level BPE vocabulary and the given pre-tokenizer."""
    b2u = bytes_to_unicode()
    tokens = [b2u[b] for b in range(256)]
    merges = []
    for word in gm.WORDS[:120]:
        spelled = b2u[32] + word
        current = spelled[0]
        for ch in spelled[1:]:
            merges.append(f"{current} {ch}")
            current += ch
            if current not in tokens:
                tokens.append(current)
    tokens.append("<|endoftext|>")
    types = [gm.NORMAL] * (len(tokens) - 1) + [gm.CONTROL]
    n_embd, n_ff, n_vocab = 64, 128, len(tokens)
    wt = gm._Weights(0, "f32")
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_context_length(4096)
    w.add_embedding_length(n_embd)
    w.add_block_count(1)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(4)
    w.add_head_count_kv(4)
    w.add_rope_dimension_count(n_embd // 4)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(pre)
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(n_vocab - 1)
    w.add_eos_token_id(n_vocab - 1)
    w.add_tensor("token_embd.weight", wt.matrix(n_vocab, n_embd, scale=1.0))
    w.add_tensor("output_norm.weight", wt.vector(n_embd, 1.0))
    w.add_tensor("blk.0.attn_norm.weight", wt.vector(n_embd, 1.0))
    w.add_tensor("blk.0.ffn_norm.weight", wt.vector(n_embd, 1.0))
    for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
        w.add_tensor(f"blk.0.{name}.weight", wt.matrix(n_embd, n_embd))
    w.add_tensor("blk.0.ffn_gate.weight", wt.matrix(n_ff, n_embd))
    w.add_tensor("blk.0.ffn_up.weight", wt.matrix(n_ff, n_embd))
    w.add_tensor("blk.0.ffn_down.weight", wt.matrix(n_embd, n_ff))
    gm._finish(w)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    return {
        "spm": gm.write_llama_gguf(d / "spm.gguf", n_ctx=32768, special_tokens=["<|im_start|>", "<|im_end|>"]),
        "wpm": gm.write_bert_gguf(d / "bert.gguf"),
        "bpe-llama3": write_bpe_gguf(d / "bpe-llama3.gguf", "llama-bpe"),
        "bpe-gpt2": write_bpe_gguf(d / "bpe-gpt2.gguf", "default"),  # std::regex: crashes on long runs
        "bpe-qwen2": write_bpe_gguf(d / "bpe-qwen2.gguf", "qwen2"),
    }


def vocab(path: Path):
    import llama_cpp

    from corral.service.engine.tokenizer import Tokenizer

    llama = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
    return llama, Tokenizer(llama)


# -- the tokenizer ------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["spm", "wpm", "bpe-llama3", "bpe-gpt2", "bpe-qwen2"])
def test_pieces_give_the_tokens_of_one_call(files, kind):
    """Texts several pieces long, with every kind of separator, unicode, digits, punctuation and special
    tokens: the same tokens as one llama_tokenize call, with and without the special tokens around them
    and with special-token parsing on and off."""
    from corral.service.engine.tokenizer import PIECE_CHARS

    llama, tokenizer = vocab(files[kind])
    texts = [text_of(3 * PIECE_CHARS + 123, seed=1), text_of(2 * PIECE_CHARS, seed=2, separators=(" ",)),
             text_of(2 * PIECE_CHARS, seed=3, separators=("\n", "\n\n", " \n", "\t")),
             text_of(3 * PIECE_CHARS, seed=4, special="<|im_start|>" if kind == "spm" else "<|endoftext|>")]
    for text in texts:
        assert len(text) > PIECE_CHARS
        for add_special in (True, False):
            for parse_special in (True, False):
                whole = llama.tokenize(text.encode("utf-8"), add_bos=add_special, special=parse_special)
                assert tokenizer.tokenize(text, add_special, parse_special) == whole, (kind, text[:40])


def test_work_is_linear_and_bounded_by_the_limit(files, monkeypatch):
    """Characters handed to llama.cpp: about the text's length whatever its size (two anchors per piece
    on top), and with a limit, what the first tokens need whatever the text's length."""
    from corral.service.engine import tokenizer as tk

    _, tokenizer = vocab(files["spm"])
    sent: list[int] = []
    real = tokenizer._call
    monkeypatch.setattr(tokenizer, "_call", lambda data, *a: sent.append(len(data)) or real(data, *a))
    costs, limited = {}, {}
    for n in (100_000, 200_000, 400_000, 800_000):
        text = text_of(n, seed=n)
        sent.clear()
        tokens = tokenizer.tokenize(text, True, True)
        costs[n] = sum(sent) / len(text.encode("utf-8"))
        sent.clear()
        first = tokenizer.tokenize(text, True, True, limit=300)
        limited[n] = sum(sent)
        assert first[:301] == tokens[:301] and len(first) > 300
    assert all(1.0 <= c < 1.0 + 6.0 * tk.ANCHOR_CHARS / tk.PIECE_CHARS for c in costs.values()), costs
    assert max(limited.values()) < 2 * tk.PIECE_CHARS, limited


def test_time_grows_linearly(files):
    """4x the text costs at most 8x the time (measured together, best of three each)."""
    _, tokenizer = vocab(files["spm"])
    small, large = text_of(250_000, seed=5), text_of(1_000_000, seed=6)

    def best(text):
        times = []
        for _ in range(3):
            start = time.perf_counter()
            tokenizer.tokenize(text, True, True)
            times.append(time.perf_counter() - start)
        return min(times)

    best(small)  # warm
    ratio = best(large) / best(small)
    assert ratio < 8, ratio


def test_cancelled_between_pieces(files):
    from corral.service.engine.tokenizer import PIECE_CHARS
    from corral.service.engine.worker import RequestError

    _, tokenizer = vocab(files["spm"])
    checks = []

    def cancelled():
        checks.append(1)
        return len(checks) > 3

    with pytest.raises(RequestError) as err:
        tokenizer.tokenize(text_of(100 * PIECE_CHARS), True, True, cancelled=cancelled)
    assert err.value.code == "CANCELLED" and len(checks) == 4  # stopped at the fourth piece of a hundred


# -- in the runner --------------------------------------------------------------------------------------


def cfg(path, **kw):
    return dict({"model_path": str(path), "num_ctx": 256, "num_batch": 256, "num_thread": 2,
                 "use_mmap": True, "embedding": False}, **kw)


def test_long_runs_do_not_kill_the_runner(files):
    """A run of 50,000 digits or punctuation marks kills llama.cpp's std::regex pre-tokenizer in one call
    (stack overflow); in pieces the runner answers, also for texts that fit the context."""
    runner = Runner(cfg(files["bpe-gpt2"], num_ctx=1024, num_batch=512))
    try:
        for text in ("1234567890" * 5000, "!?" * 25000):
            _, final = runner.call("generate", {"prompt": text, "options": {"num_predict": 1, "temperature": 0}})
            assert final["prompt_eval_count"] == 1023
            _, final = runner.call("embed", {"inputs": [text], "truncate": True})
            assert final["counts"] == [1024] and not final["errors"]
        assert runner.alive
    finally:
        runner.close()


@pytest.fixture(scope="module")
def llama(files):
    r = Runner(cfg(files["spm"], num_ctx=512, num_batch=512))
    yield r
    r.close()


def test_huge_generate_is_truncated_to_the_tokens_of_one_call(files, llama):
    """A 600,000-character prompt: the context is num_keep tokens of the start and the end of what one
    tokenize call gives, as before."""
    whole_vocab, _ = vocab(files["spm"])
    prompt = text_of(600_000, seed=9)
    _, final = llama.call("generate", {"prompt": prompt, "options": {"num_predict": 1, "temperature": 0, "num_keep": 4}})
    tokens = whole_vocab.tokenize(prompt.encode("utf-8"), add_bos=True, special=True)
    assert final["context"][:511] == tokens[:4] + tokens[-507:]


def test_too_long_with_truncate_false_is_refused(llama):
    with pytest.raises(InvalidArgument, match=TOO_LONG):
        llama.call("generate", {"prompt": text_of(1_000_000), "truncate": False, "options": {"num_predict": 1}})
    _, final = llama.call("embed", {"inputs": [text_of(1_000_000), "hello"], "truncate": False})
    assert final["errors"] == {0: ("INVALID_ARGUMENT", TOO_LONG)} and final["counts"][1] > 0


def test_huge_embed_keeps_its_first_tokens(llama):
    """truncate=true keeps the first num_ctx tokens: the vector of a million characters is the vector of
    their first few thousand."""
    text = text_of(1_000_000, seed=11)
    _, final = llama.call("embed", {"inputs": [text, text[:20_000]], "truncate": True})
    assert final["counts"] == [512, 512]
    np.testing.assert_array_equal(final["vectors"][0], final["vectors"][1])


def test_chat_count_stops_at_the_limit(llama):
    _, final = llama.call("tokenize", {"texts": [text_of(1_000_000), "hello world"], "limit": 511})
    assert final["counts"][0] > 511 and final["counts"][1] == 3


def test_cancel_frees_the_runner_during_the_prompt(files):
    """One sequence of 32,768 tokens (reading a prompt that fills it takes seconds here) is cancelled
    while its prompt is read: the runner stops it at its next chunk and answers a short request at once."""
    runner = Runner(cfg(files["spm"], num_ctx=32768, num_batch=512))
    cancel = threading.Event()
    errors = []

    def big():
        try:
            runner.call("generate", {"prompt": text_of(1_000_000), "options": {"num_predict": 1}}, cancel)
        except Cancelled as exc:
            errors.append(exc)

    try:
        thread = threading.Thread(target=big)
        thread.start()
        time.sleep(0.5)
        cancel.set()
        thread.join(5)
        assert errors and not thread.is_alive()
        start = time.perf_counter()
        _, final = runner.call("generate", {"prompt": "hello", "options": {"num_predict": 2}})
        assert final["eval_count"] == 2
        assert time.perf_counter() - start < 3
    finally:
        runner.close()


def test_short_prompt_is_not_queued_behind_a_long_one(files):
    """Two sequences: a short request sent just after a prompt that fills a context of 4,096 tokens is
    answered before that prompt's first token (prompt chunks go shortest first)."""
    runner = Runner(cfg(files["spm"], num_ctx=4096, num_batch=256, num_parallel=2))
    events: list[tuple[str, str]] = []
    lock = threading.Lock()

    def run(name, prompt, num_predict):
        gen = runner.request("generate", {"prompt": prompt, "options": {"num_predict": num_predict}})
        try:
            while True:
                next(gen)
                with lock:
                    events.append((name, "item"))
        except StopIteration:
            with lock:
                events.append((name, "done"))

    try:
        big = threading.Thread(target=run, args=("big", text_of(100_000), 1))
        big.start()
        time.sleep(0.05)
        run("small", "hello world", 3)
        big.join(60)
    finally:
        runner.close()
    assert events[-1] == ("big", "done")
    assert events.index(("small", "done")) < next(i for i, e in enumerate(events) if e[0] == "big")
