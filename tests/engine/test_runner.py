"""The runner child process with real tiny GGUF models: embeddings, generation, cancellation, and
failures (a load error, an abort inside llama.cpp, a killed runner) that must stay inside the child.

Why here and not only end to end: these pin down the runner protocol itself (items, final reply, error
codes, RunnerDied) in a few seconds, so an e2e failure can be told apart from a runner failure.
"""

import os
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import tests.gguf_models as gm  # noqa: E402
from corral.service.engine.runner import Runner, RunnerDied  # noqa: E402
from corral.store.errors import Cancelled, Internal, InvalidArgument  # noqa: E402


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    return {
        "bert": gm.write_bert_gguf(d / "bert.gguf"),
        "llama": gm.write_llama_gguf(d / "llama.gguf", n_ctx=2048),
        "long": gm.write_llama_gguf(d / "long.gguf", n_ctx=16384),
    }


def cfg(path, **kw):
    return dict({"model_path": str(path), "num_ctx": 128, "num_batch": 128, "num_thread": 2,
                 "use_mmap": True, "embedding": False}, **kw)


@pytest.fixture(scope="module")
def bert(files):
    r = Runner(cfg(files["bert"], embedding=True))
    yield r
    r.close()


@pytest.fixture(scope="module")
def llama(files):
    r = Runner(cfg(files["llama"], num_ctx=2048, num_batch=512))
    yield r
    r.close()


def embed(runner, inputs, **kw):
    items, final = runner.call("embed", dict({"inputs": inputs}, **kw))
    assert items == []  # one batch, one reply
    return final["vectors"], final


def test_embed_batches_keep_order(bert):
    texts = [f"the sky is blue {i}" for i in range(300)] + ["hello"]
    together, final = embed(bert, texts)
    assert together.shape == (301, 64) and together.dtype == np.float32
    alone = np.concatenate([embed(bert, [t])[0] for t in (texts[0], texts[150], texts[-1])])
    # Flash attention accumulates in F16, so a packed batch differs from a lone input in the last digits:
    # the bar is cosine >= 0.9999, and each value stays close too.
    picked = together[[0, 150, -1]]
    cosine = (picked * alone).sum(1) / np.linalg.norm(picked, axis=1) / np.linalg.norm(alone, axis=1)
    assert cosine.min() >= 0.9999
    np.testing.assert_allclose(picked, alone, atol=3e-3)
    assert final["prompt_eval_count"] > 301


def test_embed_truncation(bert):
    long = "the sky " * 400
    vec, final = embed(bert, [long])
    assert vec.shape == (1, 64) and final["prompt_eval_count"] == 128 and final["counts"] == [128]
    # A too-long input fails alone (per-input flags: several callers share a batch).
    vec, final = embed(bert, ["hello", long, long], truncate=[False, False, True])
    assert final["errors"] == {1: ("INVALID_ARGUMENT", "the input length exceeds the context length")}
    assert final["counts"][:2] == [3, 0] and final["counts"][2] == 128
    assert not vec[1].any() and vec[0].any() and vec[2].any()


def test_embed_on_llama(llama):
    vec, final = embed(llama, ["hello world", "the sky is blue", "x " * 700])
    assert vec.shape == (3, 64) and np.isfinite(vec).all()
    assert not np.allclose(vec[0], vec[1])


def generate(runner, prompt, **opts):
    payload = {"prompt": prompt, "options": dict({"num_predict": 12}, **opts)}
    items, final = runner.call("generate", payload)
    return "".join(items), final


def test_generate_seed_and_metrics(llama):
    a, fa = generate(llama, "hello world", temperature=0.9, seed=42)
    b, _ = generate(llama, "hello world", temperature=0.9, seed=42)
    g1, _ = generate(llama, "the sky", temperature=0)
    g2, _ = generate(llama, "the sky", temperature=0)
    assert a == b and g1 == g2 and a
    assert fa["done_reason"] == "length" and fa["eval_count"] == 12
    assert fa["prompt_eval_count"] == 3 and fa["prompt_eval_duration"] > 0 and fa["eval_duration"] > 0
    assert fa["context"][:3] == [1, 1038, 850] and len(fa["context"]) == 15


def test_stop_string_never_streamed(llama):
    text, _ = generate(llama, "hello world", temperature=0)
    stop = text.strip().split()[1]
    cut, final = generate(llama, "hello world", temperature=0, stop=[stop])
    assert stop not in cut and final["done_reason"] == "stop"
    assert text.startswith(cut)


def test_json_format(llama):
    import json

    items, final = llama.call("generate", {"prompt": "hello", "format": "json",
                                           "options": {"num_predict": 200, "temperature": 0}})
    if final["done_reason"] == "stop":
        json.loads("".join(items))
    with pytest.raises(InvalidArgument):
        llama.call("generate", {"prompt": "hello", "format": '{"type": "nonsense-type"}', "options": {}})


def test_cancel_stops_work(files):
    runner = Runner(cfg(files["long"], num_ctx=16384, num_batch=512))  # filling it takes ~15 s here
    try:
        cancel = threading.Event()
        got = []
        with pytest.raises(Cancelled):
            for piece in runner.request("generate", {"prompt": "hello", "options": {"num_predict": 100000}}, cancel):
                got.append(piece)
                if len(got) == 3:
                    cancel.set()
        start = time.monotonic()
        text, final = generate(runner, "the sky", temperature=0, num_predict=2)
        # the runner stopped the long generation: the next request is served at once
        assert time.monotonic() - start < 3 and final["eval_count"] == 2
    finally:
        runner.close()


def test_load_error_is_internal(tmp_path):
    import gguf

    w = gguf.GGUFWriter(str(tmp_path / "nokey.gguf"), "llama")
    w.add_context_length(128)
    w.add_tensor("token_embd.weight", np.zeros((10, 8), dtype=np.float32))
    w.write_header_to_file(), w.write_kv_data_to_file(), w.write_tensors_to_file(), w.close()
    with pytest.raises(Internal) as err:
        Runner(cfg(tmp_path / "nokey.gguf"))
    assert err.value.message.startswith("llama runner process has terminated: error loading model:")


def test_abort_in_llama_cpp_only_kills_the_runner(tmp_path, monkeypatch, bert):
    # An F16 token_types tensor makes ggml abort() on the first decode (llama-cpp-facts.md).
    orig = gm._Weights.f32_matrix
    monkeypatch.setattr(gm._Weights, "f32_matrix", lambda self, r, c, scale=0.1: orig(self, r, c, scale).astype(np.float16))
    bad = gm.write_bert_gguf(tmp_path / "bad.gguf")
    with pytest.raises(Internal) as err:  # the runner's warm-up decode aborts while loading
        Runner(cfg(bad, embedding=True)).call("embed", {"inputs": ["hello"]})
    assert err.value.message == "llama runner process has terminated: signal: aborted (core dumped)"
    assert embed(bert, ["still serving"])[0].shape == (1, 64)


def test_killed_mid_request(files):
    runner = Runner(cfg(files["llama"], num_ctx=2048, num_batch=512))
    gen = runner.request("generate", {"prompt": "hello", "options": {"num_predict": 100000}})
    next(gen)
    os.kill(runner.pid, signal.SIGKILL)
    with pytest.raises(RunnerDied) as err:
        for _ in gen:
            pass
    assert err.value.message == "llama runner process has terminated: signal: killed"
    with pytest.raises(RunnerDied):
        runner.call("embed", {"inputs": ["x"]})
