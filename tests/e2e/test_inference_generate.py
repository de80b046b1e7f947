"""Generate and chat end to end with the official `ollama` client over real HTTP, streamed and not,
on a tiny llama GGUF: templates (Go template layer and the GGUF's Jinja chat template), seeds, stop,
num_predict, JSON format, the load/unload shortcuts, metrics, and Ollama's error texts.
"""

import json
import re

import ollama
import pytest
import requests

from tests.gguf_models import write_llama_gguf
from tests.models_helpers import create_from_gguf, upload

# Go RFC3339Nano: up to nine fraction digits, trailing zeros dropped (and the fraction too when zero)
CREATED_AT = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{0,8}[1-9])?Z$")
GREEDY = {"temperature": 0, "num_predict": 8}


@pytest.fixture
def models(server, tmp_path):
    create_from_gguf(server.stub, tmp_path, "tiny", kind="llama")
    create_from_gguf(server.stub, tmp_path, "bert-gen", kind="bert")
    return server


def test_generate_stream_and_not(models, ollama_client):
    whole = ollama_client.generate(model="tiny", prompt="hello world", options=GREEDY)
    assert whole.done and whole.done_reason == "length" and whole.response
    assert whole.eval_count == 8 and whole.prompt_eval_count > 0 and whole.total_duration > 0
    assert whole.context and whole.created_at
    parts = list(ollama_client.generate(model="tiny", prompt="hello world", options=GREEDY, stream=True))
    assert all(not p.done for p in parts[:-1]) and parts[-1].done and parts[-1].done_reason == "length"
    assert "".join(p.response for p in parts) == whole.response


def test_seed_reproduces(models, ollama_client):
    opts = {"temperature": 1.0, "seed": 123, "num_predict": 12}
    a = ollama_client.generate(model="tiny", prompt="the sky", options=opts).response
    b = ollama_client.generate(model="tiny", prompt="the sky", options=opts).response
    assert a == b


def test_stop_and_raw(models, ollama_client):
    text = ollama_client.generate(model="tiny", prompt="hello", options=GREEDY).response
    word = text.split()[1] if len(text.split()) > 1 else text.split()[0]
    cut = ollama_client.generate(model="tiny", prompt="hello", options=dict(GREEDY, stop=[word]))
    assert word not in cut.response and cut.done_reason == "stop"
    raw = ollama_client.generate(model="tiny", prompt="hello", raw=True, options=GREEDY)
    assert raw.response == text and not raw.context


def test_chat_stream_and_not(models, ollama_client):
    messages = [{"role": "user", "content": "hello"}]
    whole = ollama_client.chat(model="tiny", messages=messages, options=GREEDY)
    assert whole.message.role == "assistant" and whole.message.content and whole.done_reason == "length"
    parts = list(ollama_client.chat(model="tiny", messages=messages, options=GREEDY, stream=True))
    assert parts[-1].done and parts[-1].message.content == "" and parts[-1].eval_count == 8
    assert "".join(p.message.content for p in parts) == whole.message.content


def test_json_format(models, ollama_client):
    r = ollama_client.generate(model="tiny", prompt="hello", format="json", options={"temperature": 0, "num_predict": 64})
    if r.done_reason == "stop":
        json.loads(r.response)
    schema = {"type": "object", "properties": {"a": {"type": "boolean"}}, "required": ["a"]}
    r = ollama_client.chat(model="tiny", messages=[{"role": "user", "content": "x"}], format=schema,
                           options={"temperature": 0, "num_predict": 64})
    if r.done_reason == "stop":
        assert set(json.loads(r.message.content)) == {"a"}


def test_template_layer_is_used(models, ollama_client, tmp_path):
    create_from_gguf(models.stub, tmp_path, "templated", kind="llama",
                     template="{{ .System }} the sky is blue {{ .Prompt }}", system="be good")
    plain = ollama_client.generate(model="tiny", prompt="hello", options=GREEDY)
    templated = ollama_client.generate(model="templated", prompt="hello", options=GREEDY)
    assert templated.prompt_eval_count == plain.prompt_eval_count + 6  # "be good the sky is blue"


def test_gguf_jinja_template_is_used(models, ollama_client, tmp_path):
    from corral.protos.ollama.v1 import ollama_pb2 as pb

    # The comment keeps this short template 100+ edits away from every known family (a close one would be
    # replaced by that family's Go template at create: tests/prompt/test_template_detection.py).
    path = write_llama_gguf(tmp_path / "jinja.gguf", seed=5, chat_template=(
        "{# a template of no known model family, rendered as Jinja: each message is told, then answered #}"
        "{% for m in messages %}tell {{ m['content'] }} {% endfor %}{% if add_generation_prompt %}answer{% endif %}"))
    req = pb.CreateRequest(model="jinja")
    req.files["model.gguf"] = upload(models.stub, path)
    list(models.stub.Create(req))
    r = ollama_client.chat(model="jinja", messages=[{"role": "user", "content": "hello"}], options=GREEDY)
    assert r.prompt_eval_count == 4  # BOS + "tell hello answer"


def test_load_and_unload(models, ollama_client, shim):
    r = requests.post(shim.url + "/api/generate", json={"model": "tiny"}, timeout=30).json()
    assert r["done"] is True and r["done_reason"] == "load" and r["response"] == ""
    assert CREATED_AT.match(r["created_at"]) and set(r) == {"model", "created_at", "response", "done", "done_reason"}
    assert [m.model for m in ollama_client.ps().models] == ["tiny:latest"]
    r = requests.post(shim.url + "/api/chat", json={"model": "tiny", "messages": [], "keep_alive": 0}, timeout=30)
    body = r.json()
    assert body["done_reason"] == "unload" and body["message"] == {"role": "assistant", "content": ""}
    assert ollama_client.ps().models == []
    r = requests.post(shim.url + "/api/chat", json={"model": "tiny"}, timeout=30).json()
    assert r["done_reason"] == "load"


def test_stream_lines_are_ollama_json(models, shim):
    r = requests.post(shim.url + "/api/generate", json={"model": "tiny", "prompt": "hi", "options": GREEDY},
                      stream=True, timeout=30)
    assert r.headers["Content-Type"] == "application/x-ndjson"
    lines = [json.loads(line) for line in r.iter_lines() if line]
    assert lines[0]["done"] is False and CREATED_AT.match(lines[0]["created_at"])
    final = lines[-1]
    assert isinstance(final["total_duration"], int) and isinstance(final["eval_count"], int)
    assert list(final)[:6] == ["model", "created_at", "response", "done", "done_reason", "context"]


@pytest.mark.parametrize("path,body,status,text", [
    ("generate", {"model": "", "prompt": "x"}, 404, "model '' not found"),
    ("chat", {"model": "", "messages": []}, 400, "model is required"),
    ("generate", {"model": "a b", "prompt": "x"}, 400, "invalid model name"),
    ("chat", {"model": "nope", "messages": []}, 404, "model 'nope' not found"),
    ("generate", {"model": "nope", "prompt": "x"}, 404, "model 'nope' not found"),
    ("generate", {"model": "bert-gen", "prompt": "x"}, 400, '"bert-gen" does not support generate'),
    ("chat", {"model": "bert-gen", "messages": [{"role": "user", "content": "x"}]}, 400,
     '"bert-gen" does not support chat'),
    ("generate", {"model": "tiny", "prompt": "x", "raw": True, "system": "s"}, 400,
     "raw mode does not support template, system, or context"),
    ("chat", {"model": "tiny", "messages": [], "tools": [{"type": "function"}]}, 400,
     "registry.ollama.ai/library/tiny:latest does not support tools"),
    ("generate", {"model": "tiny", "prompt": "x", "think": True}, 400, '"tiny" does not support thinking'),
    ("generate", {"model": "tiny", "prompt": "x", "top_logprobs": 21}, 400, "top_logprobs must be between 0 and 20"),
])
def test_errors(models, shim, path, body, status, text):
    r = requests.post(f"{shim.url}/api/{path}", json=body, timeout=30)
    assert (r.status_code, r.json()) == (status, {"error": text})


def test_official_client_error(models, ollama_client):
    with pytest.raises(ollama.ResponseError) as err:
        ollama_client.generate(model="bert-gen", prompt="x")
    assert err.value.status_code == 400


def test_context_continues(models, ollama_client):
    first = ollama_client.generate(model="tiny", prompt="hello", options=GREEDY)
    second = ollama_client.generate(model="tiny", prompt="the sky", context=first.context, options=GREEDY)
    assert second.prompt_eval_count == len(first.context) + 2  # no second BOS: "▁the ▁sky"
    assert second.context[: len(first.context)] == first.context
