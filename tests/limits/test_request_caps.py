"""Per-request caps enforced by the service (service/api/limits.py), at each limit and just past it, over
gRPC, the Ollama REST routes and the /v1 routes, with real tiny models: options that size a runner
(num_ctx, num_batch) or a generation (num_predict), the text of a generate or chat request, and the
inputs of an embed request (count and bytes), EmbedStream items and the legacy embeddings prompt.

Why: a request could ask for a 2-billion-token context or an 8-million-input embed batch and take the
machine's memory before anything refused it. Each refusal is a 400 (INVALID_ARGUMENT) naming the limit
and its variable, and comes before any runner is loaded.
"""

import grpc
import pytest
import requests

from corral.protos.ollama.v1 import ollama_pb2 as pb
from tests.models_helpers import create_from_gguf


@pytest.fixture
def llama(server, tmp_path):
    create_from_gguf(server.stub, tmp_path, "tiny", kind="llama")
    return server


@pytest.fixture
def bert(server, tmp_path):
    create_from_gguf(server.stub, tmp_path, "bert", kind="bert")
    return server


def post(shim, path: str, body: dict) -> requests.Response:
    return requests.post(shim.url + path, json=body, timeout=60)


def generate(shim, options: dict, **fields) -> requests.Response:
    return post(shim, "/api/generate", {"model": "tiny", "prompt": "hi", "stream": False, "options": options,
                                        **fields})


def loaded(shim) -> list[str]:
    return [m["name"] for m in requests.get(shim.url + "/api/ps", timeout=10).json()["models"]]


def test_option_caps_at_and_past_the_default_limits(llama, shim):
    past = [({"num_ctx": 131073}, 'option "num_ctx" is 131073, above the limit of 131072 (CORRAL_MAX_NUM_CTX)'),
            ({"num_batch": 8193}, 'option "num_batch" is 8193, above the limit of 8192 (CORRAL_MAX_NUM_BATCH)'),
            ({"num_predict": 131073},
             'option "num_predict" is 131073, above the limit of 131072 (CORRAL_MAX_NUM_PREDICT)'),
            ({"num_ctx": 2**31 - 1}, 'option "num_ctx" is 2147483647, above the limit of 131072 (CORRAL_MAX_NUM_CTX)')]
    for options, text in past:
        r = generate(shim, dict(options, num_predict=options.get("num_predict", 1)))
        assert (r.status_code, r.json()) == (400, {"error": text})
    assert loaded(shim) == []  # refused before any runner was loaded
    # At the limits: loaded (num_ctx is then cut to the model's trained 256, as Ollama does) and answered.
    r = generate(shim, {"num_ctx": 131072, "num_batch": 8192, "num_predict": 2, "temperature": 0})
    assert r.status_code == 200 and r.json()["eval_count"] == 2
    assert loaded(shim) == ["tiny:latest"]


def test_num_predict_cap_keeps_unlimited_and_fill_context(llama, shim, monkeypatch):
    monkeypatch.setenv("CORRAL_MAX_NUM_PREDICT", "4")
    r = generate(shim, {"num_predict": 5})
    assert (r.status_code, r.json()) == (
        400, {"error": 'option "num_predict" is 5, above the limit of 4 (CORRAL_MAX_NUM_PREDICT)'})
    assert generate(shim, {"num_predict": 4, "temperature": 0}).json()["eval_count"] == 4
    for unlimited in (-1, -2):  # until the context is full (no shift): 256 tokens of the tiny model
        r = generate(shim, {"num_predict": unlimited, "temperature": 0}, shift=False)
        assert r.status_code == 200 and r.json()["done"]


def test_options_of_embed_requests_are_capped_too(bert, shim):
    r = post(shim, "/api/embed", {"model": "bert", "input": "hi", "options": {"num_batch": 8193}})
    assert (r.status_code, r.json()) == (
        400, {"error": 'option "num_batch" is 8193, above the limit of 8192 (CORRAL_MAX_NUM_BATCH)'})
    r = post(shim, "/api/embeddings", {"model": "bert", "prompt": "hi", "options": {"num_ctx": 131073.0}})
    assert r.status_code == 400 and "CORRAL_MAX_NUM_CTX" in r.json()["error"]
    config = pb.EmbedStreamConfig(model="bert")
    config.options.update({"num_ctx": 1e6})
    with pytest.raises(grpc.RpcError) as err:
        list(bert.stub.EmbedStream(iter([pb.EmbedStreamRequest(config=config)]), timeout=30))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details() == 'option "num_ctx" is 1000000, above the limit of 131072 (CORRAL_MAX_NUM_CTX)'


def test_prompt_size_of_generate_and_chat(llama, shim, monkeypatch):
    monkeypatch.setenv("CORRAL_MAX_PROMPT_BYTES", "300")
    text = "prompt too large: 301 bytes, the limit is 300 bytes (CORRAL_MAX_PROMPT_BYTES)"
    opts = {"num_predict": 1}
    at = "é" * 150  # 300 bytes of UTF-8
    assert generate(shim, opts, prompt=at).status_code == 200
    r = generate(shim, opts, prompt=at + "a")
    assert (r.status_code, r.json()) == (400, {"error": text})
    r = generate(shim, opts, prompt="a" * 200, system="s" * 101)
    assert (r.status_code, r.json()) == (400, {"error": text})

    def chat(content: str, path: str = "/api/chat") -> requests.Response:
        body = {"model": "tiny", "messages": [{"role": "user", "content": content}], "stream": False,
                "options": opts, "max_tokens": 1}
        return post(shim, path, body)

    assert chat("a" * 296).status_code == 200  # "user" is 4 bytes
    r = chat("a" * 297)
    assert (r.status_code, r.json()) == (400, {"error": text})
    assert chat("a" * 296, "/v1/chat/completions").status_code == 200
    r = chat("a" * 297, "/v1/chat/completions")
    assert r.status_code == 400 and r.json()["error"]["message"] == text
    r = post(shim, "/v1/completions", {"model": "tiny", "prompt": "a" * 301, "max_tokens": 1})
    assert r.status_code == 400 and r.json()["error"]["message"] == text


def test_embed_inputs_and_bytes(bert, shim, monkeypatch):
    monkeypatch.setenv("CORRAL_MAX_EMBED_INPUTS", "3")
    monkeypatch.setenv("CORRAL_MAX_EMBED_BYTES", "64")
    r = post(shim, "/api/embed", {"model": "bert", "input": ["a", "b", "c"]})
    assert r.status_code == 200 and len(r.json()["embeddings"]) == 3
    too_many = "too many inputs: 4, the limit is 3 (CORRAL_MAX_EMBED_INPUTS)"
    r = post(shim, "/api/embed", {"model": "bert", "input": ["a", "b", "c", "d"]})
    assert (r.status_code, r.json()) == (400, {"error": too_many})
    r = post(shim, "/v1/embeddings", {"model": "bert", "input": ["a", "b", "c", "d"]})
    assert r.status_code == 400 and r.json()["error"]["message"] == too_many

    assert post(shim, "/api/embed", {"model": "bert", "input": ["x" * 32, "y" * 32]}).status_code == 200
    r = post(shim, "/api/embed", {"model": "bert", "input": ["x" * 32, "y" * 33]})
    assert (r.status_code, r.json()) == (
        400, {"error": "input too large: 65 bytes, the limit is 64 bytes (CORRAL_MAX_EMBED_BYTES)"})
    assert post(shim, "/api/embeddings", {"model": "bert", "prompt": "z" * 64}).status_code == 200
    r = post(shim, "/api/embeddings", {"model": "bert", "prompt": "z" * 65})
    assert (r.status_code, r.json()) == (
        400, {"error": "prompt too large: 65 bytes, the limit is 64 bytes (CORRAL_MAX_EMBED_BYTES)"})

    # token ids count four bytes each
    ids = [5, 6, 7, 8] * 4
    assert len(list(bert.stub.Embed(pb.EmbedRequest(model="bert", input_tokens=[pb.TokenIds(ids=ids)])))) >= 1
    with pytest.raises(grpc.RpcError) as err:
        list(bert.stub.Embed(pb.EmbedRequest(model="bert", input_tokens=[pb.TokenIds(ids=[*ids, 5])])))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details() == "input too large: 68 bytes, the limit is 64 bytes (CORRAL_MAX_EMBED_BYTES)"


def test_embed_stream_items(bert, monkeypatch):
    monkeypatch.setenv("CORRAL_MAX_EMBED_BYTES", "64")

    def stream(*texts: str):
        yield pb.EmbedStreamRequest(config=pb.EmbedStreamConfig(model="bert"))
        for i, text in enumerate(texts):
            yield pb.EmbedStreamRequest(items=[pb.EmbedItem(id=f"doc-{i}", text=text)])

    replies = list(bert.stub.EmbedStream(stream("a" * 64, "b" * 64), timeout=60))
    assert [r.id for reply in replies for r in reply.results] == ["doc-0", "doc-1"]
    with pytest.raises(grpc.RpcError) as err:
        list(bert.stub.EmbedStream(stream("a" * 64, "b" * 65), timeout=60))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details() == "item 'doc-1' too large: 65 bytes, the limit is 64 bytes (CORRAL_MAX_EMBED_BYTES)"
