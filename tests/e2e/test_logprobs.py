"""logprobs and top_logprobs end to end on a tiny random llama: generate and chat, streamed and not, over
REST (the official `ollama` client and raw JSON) and gRPC. The values must equal llama-cpp-python's own
log probabilities (Llama.logits_to_logprobs over the logits of the same tokens) within 1e-4, the
alternatives must be the most likely tokens, most likely first, and the fields must look like Ollama's.
"""

import math

import llama_cpp
import numpy as np
import pytest
import requests

from corral.protos.ollama.v1 import ollama_pb2 as pb
from tests.models_helpers import create_from_gguf

GREEDY = {"temperature": 0, "num_predict": 8, "repeat_penalty": 1.0}  # so greedy picks the top token


@pytest.fixture
def tiny(server, tmp_path):
    create_from_gguf(server.stub, tmp_path, "tiny", kind="llama")
    return tmp_path / "llama-tiny.gguf"


@pytest.fixture(scope="module")
def reference():
    """llama-cpp-python's log probabilities of every next token after each prefix of `tokens`."""
    models: dict = {}

    def logprobs(path, tokens: list[int]) -> np.ndarray:
        if path not in models:
            models[path] = llama_cpp.Llama(model_path=str(path), n_ctx=256, logits_all=True, flash_attn=True,
                                           verbose=False)
        llm = models[path]
        llm.reset()
        llm.eval(tokens)
        return llama_cpp.Llama.logits_to_logprobs(llm.scores[: len(tokens)])

    return logprobs


def check_against(ref: np.ndarray, context: list[int], entries: list[dict], top: int, vocab_piece) -> None:
    """entries are the logprobs of the last len(entries) tokens of context; row i-1 predicts token i."""
    start = len(context) - len(entries)
    assert start > 0 and len(entries) > 0
    for i, entry in enumerate(entries):
        token = context[start + i]
        row = ref[start + i - 1]
        assert entry["token"] == vocab_piece(token)
        assert abs(entry["logprob"] - float(row[token])) < 1e-4
        if entry["bytes"]:
            assert bytes(entry["bytes"]).decode("utf-8", "replace") == entry["token"]
        alternatives = entry.get("top_logprobs") or []
        assert len(alternatives) == top
        if top:
            values = [a["logprob"] for a in alternatives]
            assert values == sorted(values, reverse=True)
            best = np.sort(row)[::-1][:top]
            assert np.allclose(values, best, atol=1e-4)
            assert alternatives[0]["token"] == entry["token"]  # greedy picked the most likely token
            assert all(a["logprob"] <= 0 and a["token"] is not None for a in alternatives)


@pytest.fixture
def piece(tiny):
    llm = llama_cpp.Llama(model_path=str(tiny), n_ctx=64, vocab_only=True, verbose=False)
    return lambda token: llm.detokenize([token], special=True).decode("utf-8", "replace")


def test_generate_logprobs_match_llama_cpp(tiny, reference, piece, shim):
    for top in (0, 5, 20):
        body = {"model": "tiny", "prompt": "why is the sky blue", "logprobs": True, "top_logprobs": top,
                "options": GREEDY, "stream": False}
        r = requests.post(f"{shim.url}/api/generate", json=body, timeout=60).json()
        assert len(r["logprobs"]) == r["eval_count"] == 8
        assert "".join(e["token"] for e in r["logprobs"]) == r["response"]
        check_against(reference(tiny, r["context"]), r["context"], r["logprobs"], top, piece)


def test_streamed_logprobs_ride_with_their_text(tiny, reference, piece, ollama_client):
    parts = list(ollama_client.generate(model="tiny", prompt="why is the sky blue", logprobs=True, top_logprobs=3,
                                        options=GREEDY, stream=True))
    entries = [lp.model_dump() for p in parts for lp in p.logprobs or []]
    assert len(entries) == 8 and "".join(e["token"] for e in entries) == "".join(p.response for p in parts)
    whole = ollama_client.generate(model="tiny", prompt="why is the sky blue", logprobs=True, top_logprobs=3,
                                   options=GREEDY)
    # the same tokens; values equal up to float noise (the second request reuses the cached prompt)
    assert [lp.token for lp in whole.logprobs] == [e["token"] for e in entries]
    assert np.allclose([lp.logprob for lp in whole.logprobs], [e["logprob"] for e in entries], atol=1e-5)
    for e in entries:  # the client's model has no bytes field; check the values
        e["bytes"] = None
    check_against(reference(tiny, whole.context), whole.context, entries, 3, piece)


def test_chat_logprobs_rest_and_grpc(tiny, reference, piece, shim, ollama_client):
    messages = [{"role": "user", "content": "hello there"}]
    whole = ollama_client.chat(model="tiny", messages=messages, logprobs=True, top_logprobs=2, options=GREEDY)
    assert len(whole.logprobs) == whole.eval_count == 8
    assert "".join(lp.token for lp in whole.logprobs) == whole.message.content
    parts = list(ollama_client.chat(model="tiny", messages=messages, logprobs=True, top_logprobs=2, options=GREEDY,
                                    stream=True))
    assert np.allclose([lp.logprob for p in parts for lp in p.logprobs or []], [lp.logprob for lp in whole.logprobs],
                       atol=1e-5)

    req = pb.ChatRequest(model="tiny", messages=[pb.Message(role="user", content="hello there")], logprobs=True,
                         top_logprobs=2)
    req.options.update(GREEDY)
    replies = list(shim.server.stub.Chat(req))
    grpc_entries = [lp for r in replies for lp in r.logprobs]
    assert [lp.token for lp in grpc_entries] == [lp.token for lp in whole.logprobs]
    assert all(abs(a.logprob - b.logprob) < 1e-5 for a, b in zip(grpc_entries, whole.logprobs, strict=True))
    assert all(len(lp.top_logprobs) == 2 and lp.token_bytes == lp.token.encode() for lp in grpc_entries)
    # the same tokens through generate give the context to compare with llama-cpp-python
    gen = list(shim.server.stub.Generate(pb.GenerateRequest(model="tiny", prompt="hello there", logprobs=True,
                                                            options=req.options)))
    context = list(gen[-1].context)
    entries = [{"token": lp.token, "logprob": lp.logprob, "bytes": list(lp.token_bytes),
                "top_logprobs": [{"token": t.token, "logprob": t.logprob} for t in lp.top_logprobs]}
               for r in gen for lp in r.logprobs]
    check_against(reference(tiny, context), context, entries, 0, piece)


def test_no_logprobs_unless_asked_and_bounds(tiny, shim):
    r = requests.post(f"{shim.url}/api/generate", json={"model": "tiny", "prompt": "hi", "options": GREEDY,
                                                         "stream": False, "top_logprobs": 5}, timeout=60).json()
    assert "logprobs" not in r
    for bad in (-1, 21):
        r = requests.post(f"{shim.url}/api/chat", json={"model": "tiny", "messages": [{"role": "user", "content": "x"}],
                                                         "logprobs": True, "top_logprobs": bad}, timeout=60)
        assert r.status_code == 400 and r.json() == {"error": "top_logprobs must be between 0 and 20"}


def test_sampled_tokens_get_their_own_logprob(tiny, reference, piece, shim):
    """With temperature sampling the picked token need not be the most likely one; its logprob is
    still the model's (raw logits), not the sampler's."""
    body = {"model": "tiny", "prompt": "tell a story", "logprobs": True, "top_logprobs": 1, "stream": False,
            "options": {"temperature": 1.5, "seed": 7, "num_predict": 12, "top_k": 100}}
    r = requests.post(f"{shim.url}/api/generate", json=body, timeout=60).json()
    ref = reference(tiny, r["context"])
    start = len(r["context"]) - len(r["logprobs"])
    for i, entry in enumerate(r["logprobs"]):
        assert abs(entry["logprob"] - float(ref[start + i - 1][r["context"][start + i]])) < 1e-4
        assert entry["top_logprobs"][0]["logprob"] >= entry["logprob"] - 1e-9
    assert math.fsum(math.exp(e["logprob"]) for e in r["logprobs"]) > 0


def test_openai_chat_logprobs(tiny, shim):
    from openai import OpenAI

    client = OpenAI(base_url=f"{shim.url}/v1", api_key="x")
    messages = [{"role": "user", "content": "hello there"}]
    r = client.chat.completions.create(model="tiny", messages=messages, max_tokens=6, temperature=0, logprobs=True,
                                       top_logprobs=3)
    content = r.choices[0].logprobs.content
    assert len(content) == 6 and "".join(c.token for c in content) == r.choices[0].message.content
    assert all(len(c.top_logprobs) == 3 and c.top_logprobs[0].logprob >= c.top_logprobs[-1].logprob for c in content)
    chunks = list(client.chat.completions.create(model="tiny", messages=messages, max_tokens=6, temperature=0,
                                                 logprobs=True, stream=True))
    streamed = [c for chunk in chunks for choice in chunk.choices if choice.logprobs for c in choice.logprobs.content]
    assert [c.token for c in streamed] == [c.token for c in content]
    plain = client.chat.completions.create(model="tiny", messages=messages, max_tokens=2)
    assert plain.choices[0].logprobs is None
