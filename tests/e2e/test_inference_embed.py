"""Embeddings end to end: the official `ollama` client over real HTTP, the shim, gRPC, the scheduler and
a runner process with real tiny GGUF models (a BERT embedding model and a llama completion model).

Why: clients depend on the exact shapes (L2-normalised float vectors in input order, `dimensions` cut
then re-normalised, raw vectors from the legacy endpoint), on the error texts, and on the gRPC stream
of batches that the shim gathers into one reply.
"""

import math

import numpy as np
import ollama
import pytest
import requests

from corral.protos.ollama.v1 import ollama_pb2 as pb
from tests.models_helpers import create_from_gguf


@pytest.fixture
def models(server, tmp_path):
    create_from_gguf(server.stub, tmp_path, "bert-e2e", kind="bert")
    create_from_gguf(server.stub, tmp_path, "llama-e2e", kind="llama")
    return server


def test_embed_list_normalised_in_order(models, ollama_client):
    texts = ["hello world", "the sky is blue", "a story of fire and water"]
    r = ollama_client.embed(model="bert-e2e", input=texts)
    assert r.model == "bert-e2e" and len(r.embeddings) == 3
    v = np.array(r.embeddings)
    assert v.shape == (3, 64) and np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-5)
    assert r.prompt_eval_count >= 3 * 3 and r.total_duration > 0
    one = ollama_client.embed(model="bert-e2e", input=texts[1])
    assert len(one.embeddings) == 1
    np.testing.assert_allclose(one.embeddings[0], v[1], atol=1e-4)
    again = ollama_client.embed(model="bert-e2e", input=texts)
    assert again.embeddings == r.embeddings  # deterministic
    assert again.load_duration is None or again.load_duration < r.load_duration


def test_dimensions_and_truncate(models, ollama_client):
    r = ollama_client.embed(model="bert-e2e", input="hello world", dimensions=16)
    assert len(r.embeddings[0]) == 16 and math.isclose(np.linalg.norm(r.embeddings[0]), 1, abs_tol=1e-5)
    long = "the sky is blue " * 200
    assert len(ollama_client.embed(model="bert-e2e", input=long).embeddings[0]) == 64
    with pytest.raises(ollama.ResponseError) as err:
        ollama_client.embed(model="bert-e2e", input=long, truncate=False)
    assert err.value.status_code == 400 and err.value.error == "the input length exceeds the context length"


def test_empty_input_loads(models, ollama_client):
    r = ollama_client.embed(model="bert-e2e", input=[])
    assert r.embeddings == []
    assert [m.name for m in ollama_client.ps().models] == ["bert-e2e:latest"]


def test_llama_embeds_too(models, ollama_client):
    r = ollama_client.embed(model="llama-e2e", input=["hello world", "the sky"])
    assert np.array(r.embeddings).shape == (2, 64)


def test_legacy_embeddings_raw(models, ollama_client):
    raw = np.array(ollama_client.embeddings(model="bert-e2e", prompt="hello world").embedding)
    normed = np.array(ollama_client.embed(model="bert-e2e", input="hello world").embeddings[0])
    assert raw.shape == (64,) and abs(np.linalg.norm(raw) - 1) > 1e-3
    np.testing.assert_allclose(raw / np.linalg.norm(raw), normed, atol=1e-5)
    assert ollama_client.embeddings(model="bert-e2e", prompt="").embedding == []


@pytest.mark.parametrize("body,status,text", [
    ({"model": "", "input": "x"}, 404, "model '' not found"),
    ({"model": "bad name!", "input": "x"}, 400, "invalid model name"),
    ({"model": "nope", "input": "x"}, 404, 'model "nope" not found, try pulling it first'),
    ({"model": "bert-e2e", "input": 5}, 400, "invalid input type"),
    ({"model": "bert-e2e", "input": ["a", 1]}, 400, "invalid input type"),
])
def test_embed_errors(models, shim, body, status, text):
    r = requests.post(shim.url + "/api/embed", json=body, timeout=30)
    assert (r.status_code, r.json()) == (status, {"error": text})


def test_legacy_errors(models, shim):
    r = requests.post(shim.url + "/api/embeddings", json={"model": "", "prompt": "x"}, timeout=30)
    assert (r.status_code, r.json()) == (400, {"error": "model is required"})
    r = requests.post(shim.url + "/api/embeddings", json={"model": "nope", "prompt": "x"}, timeout=30)
    assert (r.status_code, r.json()) == (404, {"error": 'model "nope" not found, try pulling it first'})


def test_grpc_embed_streams_batches(models):
    texts = [f"the sky is blue {i}" for i in range(700)]
    replies = list(models.stub.Embed(pb.EmbedRequest(model="bert-e2e", input=texts)))
    assert len(replies) >= 2
    assert [r.offset for r in replies] == sorted(r.offset for r in replies)
    vectors = [list(e.values) for r in replies for e in r.embeddings]
    assert len(vectors) == 700 and replies[-1].metrics.prompt_eval_count > 700
    assert not any(r.HasField("metrics") for r in replies[:-1])


def test_grpc_embed_token_ids(models):
    """input_tokens: ids in the vocabulary embed; an id outside it, or both fields at once, is refused."""
    import grpc

    ids = [pb.TokenIds(ids=[5, 6, 7]), pb.TokenIds(ids=[8])]
    replies = list(models.stub.Embed(pb.EmbedRequest(model="bert-e2e", input_tokens=ids)))
    vectors = [list(e.values) for r in replies for e in r.embeddings]
    assert len(vectors) == 2 and replies[-1].metrics.prompt_eval_count == 4 + 2 * 2  # [CLS] .. [SEP] each
    negative = pb.EmbedRequest(model="bert-e2e", input_tokens=[pb.TokenIds(ids=[-1])])
    both = pb.EmbedRequest(model="bert-e2e", input=["a"], input_tokens=ids)
    for request, text in ((negative, "invalid token id -1"), (both, "cannot both be set")):
        with pytest.raises(grpc.RpcError) as err:
            list(models.stub.Embed(request))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and text in err.value.details()


def test_rest_json_shape(models, shim):
    r = requests.post(shim.url + "/api/embed", json={"model": "bert-e2e", "input": "hi"}, timeout=30)
    body = r.json()
    assert r.headers["Content-Type"].startswith("application/json")
    assert list(body)[:2] == ["model", "embeddings"] and isinstance(body["prompt_eval_count"], int)
    assert "eval_count" not in body
