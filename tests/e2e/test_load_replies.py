"""Load and unload replies and load_duration as the spec says (section "POST /api/generate, /api/chat"):
generate with an empty prompt and chat without messages answer with one application/json object, not an
NDJSON stream, even though stream defaults to true; every final line of a real generation has a non-zero
load_duration, also when the model was already loaded. Raw HTTP and the official ollama client.
"""

import json

import pytest
import requests

from tests.models_helpers import create_from_gguf

JSON = "application/json; charset=utf-8"
GREEDY = {"temperature": 0, "num_predict": 4}


@pytest.fixture
def models(server, tmp_path):
    create_from_gguf(server.stub, tmp_path, "tiny", kind="llama")
    return server


@pytest.mark.parametrize("stream", [None, True, False])
def test_load_and_unload_replies_are_one_json_object(models, shim, stream):
    extra = {} if stream is None else {"stream": stream}
    cases = [("/api/generate", {"model": "tiny"}, "load"), ("/api/chat", {"model": "tiny", "messages": []}, "load"),
             ("/api/generate", {"model": "tiny", "prompt": "", "keep_alive": 0}, "unload"),
             ("/api/chat", {"model": "tiny", "keep_alive": "0s"}, "unload")]
    for path, body, reason in cases:
        r = requests.post(shim.url + path, json=dict(body, **extra), timeout=60)
        assert r.status_code == 200 and r.headers["Content-Type"] == JSON
        assert r.text.count("\n") <= 1  # one object, not lines
        reply = json.loads(r.text)
        assert reply["done"] is True and reply["done_reason"] == reason and reply["model"] == "tiny"
        if path == "/api/generate":
            assert reply["response"] == "" and "message" not in reply
        else:
            assert reply["message"] == {"role": "assistant", "content": ""} and "response" not in reply


def test_missing_model_is_still_an_error(models, shim):
    r = requests.post(shim.url + "/api/generate", json={"model": "nope"}, timeout=30)
    assert r.status_code == 404 and r.json() == {"error": "model 'nope' not found"}


def test_final_line_always_has_load_duration(models, shim):
    requests.post(shim.url + "/api/generate", json={"model": "tiny"}, timeout=60)  # loaded now
    for path, body in (("/api/generate", {"prompt": "hello"}), ("/api/chat", {"messages": [{"role": "user", "content": "hi"}]})):
        for stream in (True, False):
            r = requests.post(shim.url + path, json=dict(body, model="tiny", options=GREEDY, stream=stream), timeout=60)
            last = json.loads(r.text.strip().splitlines()[-1])
            assert last["done"] is True
            assert isinstance(last["load_duration"], int) and 0 < last["load_duration"] <= last["total_duration"]
    streamed = requests.post(shim.url + "/api/generate", json={"model": "tiny", "prompt": "hi", "options": GREEDY},
                             timeout=60)
    assert streamed.headers["Content-Type"] == "application/x-ndjson"  # real generations still stream


def test_official_client(models, ollama_client):
    r = ollama_client.generate(model="tiny")
    assert r.done and r.done_reason == "load" and r.response == ""
    parts = list(ollama_client.generate(model="tiny", stream=True))
    assert len(parts) == 1 and parts[0].done_reason == "load"
    parts = list(ollama_client.chat(model="tiny", messages=[], stream=True))
    assert len(parts) == 1 and parts[0].done_reason == "load" and parts[0].message.content == ""
    assert [m.model for m in ollama_client.ps().models] == ["tiny:latest"]
    r = ollama_client.chat(model="tiny", messages=[], keep_alive=0)
    assert r.done_reason == "unload"
    assert ollama_client.ps().models == []
    g = ollama_client.generate(model="tiny", prompt="hello", options=GREEDY)  # loads it: a real load time
    assert g.load_duration and g.load_duration > 0
    again = ollama_client.chat(model="tiny", messages=[{"role": "user", "content": "hi"}], options=GREEDY)
    assert again.load_duration and 0 < again.load_duration < g.load_duration  # already loaded: still there
