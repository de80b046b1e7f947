"""The OpenAI-compatible API (/v1) end to end with the official `openai` Python client over real HTTP.

Every reply is also validated against the client's own pydantic models in strict mode (the field names
and types the SDKs parse), so a renamed or mistyped field fails here even where the SDK would be lenient.
"""

import base64
import json

import numpy as np
import openai
import pytest
import requests
from openai.types import Completion, CreateEmbeddingResponse, Model
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from tests.models_helpers import create_from_gguf

GREEDY = {"temperature": 0, "max_tokens": 8}


@pytest.fixture
def models(server, tmp_path):
    create_from_gguf(server.stub, tmp_path, "tiny", kind="llama")
    create_from_gguf(server.stub, tmp_path, "bert", kind="bert")
    return server


@pytest.fixture
def client(shim):
    return openai.OpenAI(base_url=shim.url + "/v1", api_key="ollama", max_retries=0)


def strict(model_type, data: dict):
    """Validate raw JSON against the SDK's schema, strictly (no coercion of types)."""
    return model_type.model_validate(data, strict=True)


def test_chat_completion(models, client, shim):
    reply = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}], **GREEDY)
    assert reply.object == "chat.completion" and reply.id.startswith("chatcmpl-")
    assert reply.choices[0].message.role == "assistant" and reply.choices[0].message.content
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage.completion_tokens == 8 and reply.usage.prompt_tokens > 0
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + 8
    raw = requests.post(shim.url + "/v1/chat/completions", json={
        "model": "tiny", "messages": [{"role": "user", "content": "hi"}], **GREEDY}).json()
    strict(ChatCompletion, raw)
    assert raw["choices"][0]["message"]["content"] == reply.choices[0].message.content  # greedy: same text


def test_chat_stream_with_usage(models, client, shim):
    body = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], **GREEDY}
    whole = client.chat.completions.create(**body).choices[0].message.content
    chunks = list(client.chat.completions.create(**body, stream=True, stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == whole
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 8
    with requests.post(shim.url + "/v1/chat/completions", json=dict(body, stream=True), stream=True) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        events = [line for line in r.iter_lines() if line]
    assert events[-1] == b"data: [DONE]"
    for event in events[:-1]:
        strict(ChatCompletionChunk, json.loads(event[len(b"data: "):]))


def test_chat_json_mode_and_options(models, client):
    reply = client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "json please"}], max_tokens=24, temperature=0,
        response_format={"type": "json_object"}, seed=3, stop=["\n\n"], frequency_penalty=0.1, presence_penalty=0.1,
        top_p=0.9)
    text = reply.choices[0].message.content.strip()
    assert text.startswith("{")  # the JSON grammar constrains the tiny model's output
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    reply = client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "json"}], max_completion_tokens=40, temperature=0,
        response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": schema}})
    assert reply.choices[0].message.content.lstrip().startswith('{')


def test_completions(models, client, shim):
    reply = client.completions.create(model="tiny", prompt="once upon", **GREEDY)
    assert reply.object == "text_completion" and reply.choices[0].text and reply.usage.completion_tokens == 8
    echoed = client.completions.create(model="tiny", prompt="once upon", echo=True, **GREEDY)
    assert echoed.choices[0].text == "once upon" + reply.choices[0].text
    parts = list(client.completions.create(model="tiny", prompt="once upon", stream=True, **GREEDY))
    assert "".join(p.choices[0].text for p in parts if p.choices) == reply.choices[0].text
    raw = requests.post(shim.url + "/v1/completions", json={"model": "tiny", "prompt": "x", **GREEDY}).json()
    strict(Completion, raw)
    # An empty prompt only loads the model (Ollama's done_reason "load"): OpenAI's clients get "stop".
    empty = client.completions.create(model="tiny", prompt="", **GREEDY)
    assert empty.choices[0].text == "" and empty.choices[0].finish_reason == "stop"


def test_embeddings_float_and_base64(models, client, shim):
    floats = client.embeddings.create(model="bert", input=["the sky", "the sea"], encoding_format="float")
    assert [d.index for d in floats.data] == [0, 1] and len(floats.data[0].embedding) > 0
    assert np.isclose(np.linalg.norm(floats.data[0].embedding), 1.0, atol=1e-5)
    raw = requests.post(shim.url + "/v1/embeddings", json={"model": "bert", "input": "the sky",
                                                          "encoding_format": "base64"}).json()
    decoded = np.frombuffer(base64.b64decode(raw["data"][0]["embedding"]), dtype="<f4")
    assert np.allclose(decoded, floats.data[0].embedding, atol=1e-6)
    assert raw["usage"]["prompt_tokens"] > 0
    strict(CreateEmbeddingResponse, requests.post(shim.url + "/v1/embeddings", json={
        "model": "bert", "input": ["a", "b"]}).json())
    cut = client.embeddings.create(model="bert", input="the sky", dimensions=4)
    assert len(cut.data[0].embedding) == 4


def test_embeddings_of_token_ids(models, client, shim, tmp_path):
    """OpenAI's token input (one list of ids, or a list of lists) embeds as the text those ids spell."""
    import llama_cpp

    vocab = llama_cpp.Llama(str(tmp_path / "bert-bert.gguf"), vocab_only=True, verbose=False)
    ids = [vocab.tokenize(t.encode(), add_bos=False, special=False) for t in ("the sky", "the sea")]
    texts = client.embeddings.create(model="bert", input=["the sky", "the sea"])
    one = client.embeddings.create(model="bert", input=ids[0])
    both = client.embeddings.create(model="bert", input=ids)
    assert np.allclose(one.data[0].embedding, texts.data[0].embedding, atol=1e-5)
    assert [d.index for d in both.data] == [0, 1]
    for got, want in zip(both.data, texts.data, strict=True):
        assert np.allclose(got.embedding, want.embedding, atol=1e-5)
    assert both.usage.prompt_tokens == texts.usage.prompt_tokens
    bad = requests.post(shim.url + "/v1/embeddings", json={"model": "bert", "input": [10**6]})
    assert bad.status_code == 400 and "invalid token id 1000000" in bad.json()["error"]["message"]
    mixed = requests.post(shim.url + "/v1/embeddings", json={"model": "bert", "input": [1, "a"]})
    assert mixed.status_code == 400 and "invalid input" in mixed.json()["error"]["message"]


def test_models_list_and_retrieve(models, client, shim):
    ids = {m.id for m in client.models.list()}
    assert {"tiny:latest", "bert:latest"} <= ids
    got = client.models.retrieve("tiny")
    assert got.id == "tiny" and got.owned_by == "library" and got.created > 0
    strict(Model, requests.get(shim.url + "/v1/models/tiny").json())


@pytest.mark.parametrize("call,status,text", [
    (lambda c: c.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}]), 404,
     "not found"),
    (lambda c: c.chat.completions.create(model="tiny", messages=[]), 400, "[] is too short - 'messages'"),
    (lambda c: c.embeddings.create(model="bert", input="x", encoding_format="int8"), 400, "encoding_format"),
    (lambda c: c.models.retrieve("nope"), 404, "not found"),
    (lambda c: c.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "x"}],
                                         reasoning_effort="extreme"), 400, "invalid reasoning value"),
])
def test_errors_in_openai_shape(models, client, call, status, text):
    with pytest.raises(openai.APIStatusError) as err:
        call(client)
    assert err.value.status_code == status and text in err.value.message
    body = err.value.body
    assert set(body) == {"message", "type", "param", "code"}  # the SDK hands over the "error" object
    assert body["type"] == {400: "invalid_request_error", 404: "not_found_error"}[status]


def test_malformed_body_is_an_openai_error(shim):
    r = requests.post(shim.url + "/v1/chat/completions", data=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"


def test_chat_tool_calls(shim, client, tmp_path):
    """A model that calls tools (a scripted Qwen-style model, tests/scripted_models.py): the OpenAI client
    gets choices[0].message.tool_calls with JSON-string arguments and finish_reason "tool_calls",
    streamed (deltas with an index each) and not; the tool's result goes back as a `tool` message."""
    from tests.e2e.test_tools_thinking import ASK, CALLS, QWEN, TIME, TWO_CALLS, WEATHER, scripted

    scripted(shim.server, tmp_path, "qwen", QWEN, TWO_CALLS)
    reply = client.chat.completions.create(model="qwen", messages=ASK, tools=[WEATHER, TIME])
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    got = [(c.function.name, json.loads(c.function.arguments)) for c in choice.message.tool_calls]
    assert got == CALLS and all(c.type == "function" and c.id for c in choice.message.tool_calls)
    assert choice.message.content.strip() == "Checking."

    chunks = list(client.chat.completions.create(model="qwen", messages=ASK, tools=[WEATHER, TIME], stream=True))
    deltas = [c for chunk in chunks for choice in chunk.choices for c in (choice.delta.tool_calls or [])]
    assert [(d.index, d.function.name, json.loads(d.function.arguments)) for d in deltas] == \
        [(i, name, args) for i, (name, args) in enumerate(CALLS)]
    assert chunks[-1].choices[0].finish_reason == "tool_calls"

    follow = client.chat.completions.create(model="qwen", tools=[WEATHER, TIME], messages=[
        *ASK, choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": choice.message.tool_calls[0].id, "content": "sunny"}])
    assert follow.choices[0].message.tool_calls  # the scripted model calls again; the request was accepted
    assert client.chat.completions.create(model="qwen", messages=ASK, tools=[WEATHER], tool_choice="none") \
        .choices[0].message.tool_calls is None  # "none": no tools reach the model, the text stays text
