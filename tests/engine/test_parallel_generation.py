"""Parallel generation in one runner (OLLAMA_NUM_PARALLEL): several generate requests decoded together in one
llama.cpp batch, each on its own sequence, with real tiny models.

Why these: the runner serves up to num_parallel requests at once in one context, and each must behave as if
it ran alone: the same greedy text, its own sampling options, stop strings, num_predict, grammar and seed,
its own cancellation, and context continuation. Greedy output is compared exactly with the request run
alone: each sequence's rows of a batch are computed independently of the others' (measured identical here
on the F32 test model and on a 50 MB F16 one), so no tolerance is needed.
"""

import json
import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import tests.gguf_models as gm  # noqa: E402
from corral.service.engine.runner import Runner  # noqa: E402
from corral.store.errors import Cancelled  # noqa: E402

PROMPTS = ["hello world", "the sky is blue", "tell me a story about a cat", "why"]
GREEDY = {"temperature": 0, "num_predict": 24}


@pytest.fixture(scope="module")
def path(tmp_path_factory):
    return gm.write_llama_gguf(tmp_path_factory.mktemp("models") / "llama.gguf", n_ctx=4096)


def cfg(path, **kw):
    return dict({"model_path": str(path), "num_ctx": 1024, "num_batch": 512, "num_thread": 1,
                 "use_mmap": True, "embedding": False, "num_parallel": 4}, **kw)


@pytest.fixture(scope="module")
def runner(path):
    r = Runner(cfg(path))
    yield r
    r.close()


def call(runner, payload, cancel=None):
    items, final = runner.call("generate", payload, cancel)
    return "".join(items), final


def generate(runner, prompt, **opts):
    return call(runner, {"prompt": prompt, "options": opts})


def together(runner, payloads: list[dict]) -> list:
    """Sends the generate payloads at once; returns each one's (text, final), or the exception it raised."""
    results: list = [None] * len(payloads)
    start = threading.Barrier(len(payloads))

    def work(k):
        start.wait()
        try:
            results[k] = call(runner, payloads[k])
        except Exception as exc:
            results[k] = exc

    threads = [threading.Thread(target=work, args=(k,)) for k in range(len(payloads))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


def greedy(prompt, **opts):
    return {"prompt": prompt, "options": dict(GREEDY, **opts)}


def test_runner_has_the_slots(runner):
    assert runner.info["num_parallel"] == 4 and runner.info["n_ctx"] == 1024


def test_greedy_parallel_equals_alone(runner):
    alone = [generate(runner, p, **GREEDY) for p in PROMPTS]
    for _ in range(2):
        both = together(runner, [greedy(p) for p in PROMPTS])
        assert [b[0] for b in both] == [a[0] for a in alone]
        assert [b[1]["context"] for b in both] == [a[1]["context"] for a in alone]
        assert all(b[1]["eval_count"] == 24 and b[1]["done_reason"] == "length" for b in both)
        assert all(b[1]["prompt_eval_count"] == a[1]["prompt_eval_count"] for a, b in zip(alone, both))


def test_requests_really_run_together(runner):
    """A short request finishes while a long one is still generating (one at a time, it would wait)."""
    long_done = threading.Event()
    got = []

    def long():
        for piece in runner.request("generate", {"prompt": "hello", "options": {"num_predict": 1000, "temperature": 0}}):
            got.append(piece)
        long_done.set()

    t = threading.Thread(target=long)
    t.start()
    deadline = time.time() + 10
    while not got and time.time() < deadline:
        time.sleep(0.001)
    text, final = generate(runner, "the sky", **GREEDY)
    assert final["eval_count"] == 24 and not long_done.is_set()
    t.join(30)
    assert long_done.is_set()


def test_per_stream_options_while_parallel(runner):
    full, _ = generate(runner, "hello world", **GREEDY)
    stop = full.split()[2]
    schema = json.dumps({"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]})
    payloads = [
        greedy("hello world", stop=[stop]),
        greedy("the sky is blue", num_predict=5),
        {"prompt": "tell me a story", "options": {"temperature": 1.0, "top_k": 100, "top_p": 1.0, "seed": 1234,
                                                  "num_predict": 32, "repeat_penalty": 1.3}},
        {"prompt": "hello", "format": schema, "options": {"temperature": 0, "num_predict": 60}},
    ]
    alone = [call(runner, p) for p in payloads]
    for _ in range(2):
        both = together(runner, payloads)
        assert [b[0] for b in both] == [a[0] for a in alone]
        assert [b[1]["context"] for b in both] == [a[1]["context"] for a in alone]
        assert [b[1]["done_reason"] for b in both] == [a[1]["done_reason"] for a in alone]
    (cut, cut_final), (short, short_final), (seeded, _), (formatted, fmt_final) = both
    assert stop not in cut and cut_final["done_reason"] == "stop" and full.startswith(cut)
    assert short_final["eval_count"] == 5 and short_final["done_reason"] == "length"
    assert seeded and seeded != generate(runner, "tell me a story", **dict(payloads[2]["options"], seed=99))[0]
    assert formatted.startswith("{")
    if fmt_final["done_reason"] == "stop":
        assert isinstance(json.loads(formatted)["a"], int)


def test_unseeded_sampling_differs_between_streams(runner):
    opts = {"temperature": 1.5, "top_k": 1000, "top_p": 1.0, "num_predict": 24}
    texts = [r[0] for r in together(runner, [{"prompt": "tell me a story", "options": opts}] * 4)]
    assert len(set(texts)) > 1


def test_cancel_one_stream_leaves_the_others(runner):
    alone = [generate(runner, p, temperature=0, num_predict=300) for p in PROMPTS[:3]]
    cancel = threading.Event()
    outcome: dict = {}

    def doomed():
        got = []
        try:
            for piece in runner.request("generate", {"prompt": "why", "options": {"num_predict": 100000,
                                                                                   "temperature": 0}}, cancel):
                got.append(piece)
                if len(got) == 2:
                    cancel.set()
        except Cancelled:
            outcome["cancelled"] = True

    t = threading.Thread(target=doomed)
    t.start()
    others = together(runner, [greedy(p, num_predict=300) for p in PROMPTS[:3]])
    t.join(30)
    assert outcome == {"cancelled": True}
    assert [o[0] for o in others] == [a[0] for a in alone]
    # the cancelled sequence's slot is free again: four requests fit at once
    assert all(isinstance(r, tuple) for r in together(runner, [greedy(p) for p in PROMPTS]))


def test_context_continuation_while_parallel(runner):
    first, f1 = generate(runner, "hello", **GREEDY)
    continued = {"prompt": "the sky", "context": f1["context"], "options": GREEDY}
    alone = call(runner, continued)
    (text, final), _ = together(runner, [continued, greedy("tell me a story about a cat")])
    assert text == alone[0] and final["context"] == alone[1]["context"]
    assert final["prompt_eval_count"] == len(f1["context"]) + 2
    assert final["context"][: len(f1["context"])] == f1["context"]


def test_long_prompt_in_chunks_between_other_tokens(path):
    """A prompt longer than num_batch is read in chunks, interleaved with another stream's tokens; both
    give the same text as alone."""
    r = Runner(cfg(path, num_batch=32, num_parallel=2))
    try:
        long_prompt = " ".join(["the sky is blue and the sun is red"] * 40)
        alone_long = generate(r, long_prompt, **GREEDY)
        alone_short = generate(r, "hello", temperature=0, num_predict=200)
        assert alone_long[1]["prompt_eval_count"] > 300
        results = together(r, [greedy("hello", num_predict=200), greedy(long_prompt)])
        assert results[0][0] == alone_short[0] and results[1][0] == alone_long[0]
    finally:
        r.close()


def test_truncation_and_length_per_sequence(path):
    """Each sequence has num_ctx tokens: a long prompt is cut to num_ctx - 1 keeping num_keep, and a
    sequence that fills its context ends with "length" when it may not shift (shift=false; context shift
    itself: test_context_shift.py). The token sampled once all num_ctx cells are used is counted, never
    decoded."""
    r = Runner(cfg(path, num_ctx=64, num_batch=64, num_parallel=2))
    try:
        long_prompt = " ".join(["hello world"] * 50)
        results = together(r, [dict(greedy(long_prompt, num_predict=100, num_keep=4), shift=False),
                               dict(greedy("hello", num_predict=1000), shift=False)])
        (_, cut), (_, full) = results
        assert cut["prompt_eval_count"] == 63 and cut["eval_count"] == 2 and cut["done_reason"] == "length"
        assert full["done_reason"] == "length" and full["prompt_eval_count"] + full["eval_count"] == 65
    finally:
        r.close()


def test_embed_between_steps_keeps_generations(runner):
    """A completion model asked to embed serves it between two decode steps; the running generation
    then evaluates its tokens again and continues with the same text."""
    payload = {"prompt": "hello world", "options": {"temperature": 0, "num_predict": 1000}}
    alone = call(runner, payload)
    pieces: list[str] = []
    final: list[dict] = []

    def gen():
        stream = runner.request("generate", payload)
        try:
            while True:
                pieces.append(next(stream))
        except StopIteration as stop:
            final.append(stop.value)

    t = threading.Thread(target=gen)
    t.start()
    deadline = time.time() + 10
    while not pieces and time.time() < deadline:
        time.sleep(0.001)
    runner.call("embed", {"inputs": ["the sky is blue", "hello"]})  # answered, whatever its payload's shape
    served_midway = t.is_alive()
    t.join(60)
    assert "".join(pieces) == alone[0] and final[0]["context"] == alone[1]["context"]
    assert served_midway
