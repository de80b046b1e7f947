"""Context shift in the runner: generation that fills a sequence's num_ctx goes on (the oldest half after
num_keep is dropped from that sequence's KV cells) until num_predict, unless shift=false; with several
sequences in one context, each shifts its own cells only.

Real llama.cpp runner child processes on a tiny llama GGUF. Sampling is seeded (the tiny model's greedy
text soon repeats one token, which would hide a wrong KV cache; a strong repeat penalty keeps it varied): each request has its own random
generator, and a sequence's rows of a batch are computed independently of the others' (see
test_parallel_generation.py), so texts are compared exactly.
"""

import sys
import threading
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import tests.gguf_models as gm  # noqa: E402
from corral.service.engine.runner import Runner  # noqa: E402
from corral.store.errors import InvalidArgument  # noqa: E402

NUM_CTX = 64
SAMPLED = {"temperature": 1.0, "seed": 7, "repeat_penalty": 3.0, "repeat_last_n": -1}


@pytest.fixture(scope="module")
def runner(tmp_path_factory):
    path = gm.write_llama_gguf(tmp_path_factory.mktemp("models") / "llama.gguf", n_ctx=4096)
    r = Runner({"model_path": str(path), "num_ctx": NUM_CTX, "num_batch": 512, "num_thread": 1,
                "use_mmap": True, "embedding": False, "num_parallel": 2})
    yield r
    r.close()


def generate(runner, prompt: str, num_predict: int, **extra):
    options = dict(SAMPLED, num_predict=num_predict, **extra.pop("options", {}))
    items, final = runner.call("generate", dict({"prompt": prompt, "options": options}, **extra))
    return "".join(items), final


def test_generation_past_the_context_continues_by_default(runner):
    text, final = generate(runner, "hello world the sky is blue", 3 * NUM_CTX)
    assert final["done_reason"] == "length"
    assert final["eval_count"] == 3 * NUM_CTX  # num_predict reached, far past num_ctx
    assert final["prompt_eval_count"] + final["eval_count"] > 2 * NUM_CTX
    # what was generated before the first shift is what an unshifted run generates
    short, _ = generate(runner, "hello world the sky is blue", 3 * NUM_CTX, shift=False)
    assert text.startswith(short) and len(text) > len(short)


def test_shift_false_stops_at_the_context_with_length(runner):
    _, final = generate(runner, "hello world the sky is blue", 3 * NUM_CTX, shift=False)
    assert final["done_reason"] == "length"
    assert final["prompt_eval_count"] + final["eval_count"] == NUM_CTX + 1  # the last one was never decoded


def common_prefix(a: str, b: str) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def test_shift_is_per_sequence(runner):
    """Requests shifting in one context, at once or at different times, each keep their own cells: the
    text up to a sequence's own first shift (and past another's shift) is the text it gets alone, and each
    goes on past its context. (After a shift, the freed cells are reused in an order that depends on the other
    sequences, so later text can differ by float rounding in the attention sums; hence the prefix.)"""
    long_prompt = " ".join(["the sky is blue and the sun is red"] * 4)  # shifts soon after it starts
    payloads = [("tell me a story about a cat", 2 * NUM_CTX + 7), ("why is the sky blue", 3 * NUM_CTX),
                (long_prompt, NUM_CTX)]
    alone = [generate(runner, p, n) for p, n in payloads]
    before_shift = [len(generate(runner, p, n, shift=False)[0]) for p, n in payloads]
    assert before_shift[2] < before_shift[1]
    for pair in ((0, 1), (1, 2)):
        results: dict = {}

        def work(k):
            results[k] = generate(runner, *payloads[k])

        threads = [threading.Thread(target=work, args=(k,)) for k in pair]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        for k in pair:
            final = results[k][1]
            assert final["prompt_eval_count"] + final["eval_count"] > NUM_CTX + 1  # went on past the context
            assert common_prefix(results[k][0], alone[k][0]) >= before_shift[k]


def test_num_keep_protects_the_prompt_start(runner):
    """num_keep=-1 keeps the whole prompt through every shift: a different continuation than num_keep=0,
    which may drop the prompt's start too."""
    prompt = "the sky is blue and the sun is red and the moon is green"
    keep_all, f1 = generate(runner, prompt, 3 * NUM_CTX, options={"num_keep": -1})
    keep_none, f0 = generate(runner, prompt, 3 * NUM_CTX, options={"num_keep": 0})
    assert f1["eval_count"] == 3 * NUM_CTX and f0["eval_count"] > NUM_CTX  # both went past a shift
    unshifted, _ = generate(runner, prompt, 3 * NUM_CTX, shift=False)
    assert keep_all.startswith(unshifted) and keep_none.startswith(unshifted)
    assert keep_all != keep_none


def test_too_long_prompt_with_truncate_false_is_refused(runner):
    with pytest.raises(InvalidArgument, match="the input length exceeds the context length"):
        generate(runner, " ".join(["hello"] * (2 * NUM_CTX)), 4, truncate=False)
