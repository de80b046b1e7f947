"""Regression tests, one per class of malformed input the hostile-client run found (issue 13): each is
sent to every JSON route of a real server and must be a 4xx with Ollama's JSON error, never a 500, an HTML
page or a traceback, and the server must answer normally afterwards."""

import json

import pytest
import requests

from tests.models_helpers import create_from_gguf

JSON_ROUTES = [
    ("POST", "/api/show"), ("POST", "/api/copy"), ("DELETE", "/api/delete"), ("POST", "/api/create"),
    ("POST", "/api/pull"), ("POST", "/api/push"), ("POST", "/api/embed"), ("POST", "/api/embeddings"),
    ("POST", "/api/generate"), ("POST", "/api/chat"), ("POST", "/v1/chat/completions"),
    ("POST", "/v1/completions"), ("POST", "/v1/embeddings"),
]


def send(shim, method: str, path: str, data, **kw) -> requests.Response:
    if isinstance(data, (dict, list)):
        data = json.dumps(data)
    return requests.request(method, shim.url + path, data=data, timeout=60, **kw)


def assert_clean_4xx(r: requests.Response, *codes: int):
    assert r.status_code in (codes or (400,)), (r.status_code, r.text[:300])
    assert r.headers["Content-Type"].startswith("application/json"), r.text[:300]
    assert "Traceback" not in r.text and "<html" not in r.text.lower()
    error = r.json()["error"]
    if isinstance(error, dict):  # /v1: OpenAI's error object
        error = error["message"]
    assert isinstance(error, str) and len(r.text) < 4096


def assert_healthy(shim):
    assert requests.get(shim.url + "/api/version", timeout=10).status_code == 200
    assert requests.get(shim.url + "/api/ps", timeout=10).status_code == 200


@pytest.fixture
def model(shim, tmp_path):
    create_from_gguf(shim.server.stub, tmp_path, "tiny")
    return "tiny"


@pytest.mark.parametrize(("method", "path"), JSON_ROUTES)
def test_deeply_nested_json_is_400_on_every_route(shim, method, path):
    for depth in (40, 5000):
        for body in ('{"model":"m","x":' + "[" * depth + "]" * depth + "}",
                     '{"model":"m","options":' + '{"a":' * depth + "1" + "}" * depth + "}"):
            assert_clean_4xx(send(shim, method, path, body))
    assert_healthy(shim)


def test_nesting_at_the_limit_is_accepted_just_past_it_refused(shim, model):
    from corral.store.config import DEFAULT_MAX_JSON_DEPTH

    def body(levels):  # the body object is level 1, "options" 2, then nested objects
        inner: dict = {}
        for _ in range(levels - 2):
            inner = {"a": inner}
        return {"model": model, "options": inner}

    ok = send(shim, "POST", "/api/show", body(DEFAULT_MAX_JSON_DEPTH))
    assert ok.status_code == 200, ok.text
    past = send(shim, "POST", "/api/show", body(DEFAULT_MAX_JSON_DEPTH + 1))
    assert_clean_4xx(past)
    assert "max depth" in past.json()["error"]


NUMBERS = ["2147483648", "-2147483649", "1e30", "9" * 5000, "NaN", "Infinity", "-Infinity", "1e400"]


@pytest.mark.parametrize("number", NUMBERS)
def test_numbers_out_of_range_are_400(shim, model, number):
    bodies = [
        ("/api/embed", f'{{"model":"{model}","input":"x","dimensions":{number}}}'),
        ("/api/generate", f'{{"model":"{model}","prompt":"x","top_logprobs":{number}}}'),
        ("/api/generate", f'{{"model":"{model}","prompt":"x","context":[{number}]}}'),
        ("/api/generate", f'{{"model":"{model}","prompt":"x","options":{{"num_predict":{number}}}}}'),
        ("/api/chat", f'{{"model":"{model}","messages":[{{"role":"user","content":"x"}}],'
                      f'"options":{{"num_ctx":{number}}}}}'),
        ("/api/embed", f'{{"model":"{model}","input":"x","options":{{"num_ctx":{number}}}}}'),
        ("/v1/embeddings", f'{{"model":"{model}","input":[{number}]}}'),
        ("/v1/chat/completions", f'{{"model":"{model}","messages":[{{"role":"user","content":"x"}}],'
                                 f'"max_tokens":{number}}}'),
    ]
    for path, data in bodies:
        assert_clean_4xx(send(shim, "POST", path, data))
    assert_healthy(shim)


def test_lone_surrogates_are_replaced_or_refused(shim, model):
    s = '"a\\ud800b"'
    cases = [
        ("POST", "/api/show", f'{{"model":{s}}}'),
        ("POST", "/api/generate", f'{{"model":{s},"prompt":"x"}}'),
        ("POST", "/api/embed", f'{{"model":"{model}","input":[{s}, "\\udfff"]}}'),
        ("POST", "/api/embeddings", f'{{"model":"{model}","prompt":{s}}}'),
        ("POST", "/api/create", f'{{"model":"x","from":"{model}","system":{s}}}'),
        ("POST", "/api/chat", f'{{"model":"{model}","messages":[{{"role":"user","content":{s}}}],'
                              f'"options":{{"num_predict":2,{s}:1}},"stream":false}}'),
        ("POST", "/v1/embeddings", f'{{"model":"{model}","input":{s}}}'),
    ]
    for method, path, data in cases:
        r = send(shim, method, path, data)
        assert r.status_code < 500, (path, r.status_code, r.text[:200])
        assert "Traceback" not in r.text
    # handled as Go does: the surrogate becomes U+FFFD, so the text embeds like its replaced form
    a = send(shim, "POST", "/api/embed", f'{{"model":"{model}","input":{s}}}').json()["embeddings"]
    b = send(shim, "POST", "/api/embed", json.dumps({"model": model, "input": "a\ufffdb"})).json()["embeddings"]
    assert a == b
    assert_healthy(shim)


def test_huge_model_name_is_a_short_400(shim):
    name = "a" * (1 << 20)
    for method, path in JSON_ROUTES:
        body = {"model": name, "name": name, "source": name, "destination": name, "prompt": "x",
                "messages": [{"role": "user", "content": "x"}], "input": "x"}
        r = send(shim, method, path, body)
        assert r.status_code in (400, 404), (path, r.status_code, r.text[:200])
        assert len(r.content) < 4096, path
    assert_clean_4xx(send(shim, "POST", "/api/show", {"model": name}))
    assert_healthy(shim)


def test_grpc_error_texts_are_capped(server):
    import grpc

    from corral.protos.ollama.v1 import ollama_pb2 as pb

    name = "b" * (1 << 20)
    with pytest.raises(grpc.RpcError) as err:
        server.stub.Copy(pb.CopyRequest(source="missing-model", destination=name))
    assert err.value.code() != grpc.StatusCode.UNAVAILABLE  # not "Stream removed"
    assert len(err.value.details() or "") <= 1024


def test_absurd_keep_alive_does_not_break_ps(shim, model):
    for keep in ("87600000h", 315_360_000_000, 1e300):
        r = send(shim, "POST", "/api/generate", {"model": model, "keep_alive": keep})
        assert r.status_code == 200, r.text
        ps = requests.get(shim.url + "/api/ps", timeout=10)
        assert ps.status_code == 200, ps.text
        assert ps.json()["models"][0]["name"] == "tiny:latest"
    send(shim, "POST", "/api/generate", {"model": model, "keep_alive": 0})


@pytest.mark.parametrize("schema", [{"enum": []}, {"anyOf": []}, {"type": []},
                                    {"type": "object", "properties": {"a": {"enum": []}}, "required": ["a"]},
                                    {"oneOf": []}, {"not": {}}])
def test_impossible_format_schema_is_400_and_the_runner_survives(shim, model, schema):
    r = send(shim, "POST", "/api/chat", {"model": model, "messages": [{"role": "user", "content": "hi"}],
                                         "format": schema, "stream": False, "options": {"num_predict": 2}})
    assert_clean_4xx(r)
    ok = send(shim, "POST", "/api/generate", {"model": model, "prompt": "hi", "stream": False,
                                              "options": {"num_predict": 2}})
    assert ok.status_code == 200, ok.text


def test_context_token_outside_the_vocabulary_is_400(shim, model):
    for token in (10**6, -1, 2**31 - 1):
        r = send(shim, "POST", "/api/generate", {"model": model, "prompt": "hi", "context": [1, token],
                                                 "stream": False, "options": {"num_predict": 2}})
        assert_clean_4xx(r)
        assert "invalid context token" in r.json()["error"]
    ok = send(shim, "POST", "/api/generate", {"model": model, "prompt": "hi", "context": [1, 2], "stream": False,
                                              "options": {"num_predict": 2}})
    assert ok.status_code == 200, ok.text


def test_body_limit_at_and_past_it(shim, monkeypatch):
    limit = 64 * 1024
    monkeypatch.setenv("CORRAL_MAX_BODY_BYTES", str(limit))
    pad = limit - len(json.dumps({"model": "missing", "prompt": ""}))
    at = json.dumps({"model": "missing", "prompt": "x" * pad})
    assert len(at) == limit
    assert send(shim, "POST", "/api/generate", at).status_code == 404  # read and answered
    past = at[:-2] + 'x"}'
    r = send(shim, "POST", "/api/generate", past)
    assert_clean_4xx(r, 413)
    # chunked (no Content-Length): refused once the limit is reached
    r = send(shim, "POST", "/api/generate", iter([past[i:i + 4096].encode() for i in range(0, len(past), 4096)]))
    assert_clean_4xx(r, 413)
    # blob uploads are not limited by it
    import hashlib

    blob = b"\0" * (limit * 2)
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    assert requests.post(f"{shim.url}/api/blobs/{digest}", data=blob, timeout=30).status_code == 201
    assert_healthy(shim)


def test_body_far_past_the_limit_is_refused_before_it_is_read(shim, monkeypatch):
    import socket
    import time

    monkeypatch.setenv("CORRAL_MAX_BODY_BYTES", "1048576")
    host, port = shim.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        start = time.monotonic()
        sock.sendall(b"POST /api/chat HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 209715200\r\n\r\n{")  # announces 200 MiB, sends one byte
        reply = b""
        while b'"error"' not in reply and time.monotonic() - start < 5:
            part = sock.recv(4096)  # the headers and the body may come in separate writes
            if not part:
                break
            reply += part
        assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
        assert b'"error"' in reply and time.monotonic() - start < 5


def test_unexpected_errors_are_json_500(shim, monkeypatch):
    from corral.rest_shim import routes_models

    def boom(*args, **kwargs):
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(routes_models, "_tags_json", boom)
    routes_models._tags_memo.items.clear()
    r = requests.get(shim.url + "/api/tags", timeout=10)
    assert r.status_code == 500
    assert r.headers["Content-Type"].startswith("application/json")
    assert r.json() == {"error": "internal server error"}


@pytest.mark.parametrize("calls", [[["x"]], [[{"": 1}], 5], "call", [True], 7, True])
def test_tool_calls_that_are_not_objects_are_400(shim, model, calls):
    """Found by the fuzzer once the document described messages: a tool call that is not an object was a 500
    on /api/chat, and tool_calls that are not a list one on /v1/chat/completions."""
    r = send(shim, "POST", "/api/chat", {"model": model, "stream": False, "options": {"num_predict": 2},
                                         "messages": [{"role": "assistant", "content": "", "tool_calls": calls}]})
    assert_clean_4xx(r)
    r = send(shim, "POST", "/v1/chat/completions", {"model": model, "max_tokens": 2, "messages": [
        {"role": "assistant", "tool_calls": calls}, {"role": "tool", "tool_call_id": "a", "content": "x"}]})
    assert_clean_4xx(r)
    assert isinstance(r.json()["error"], dict)
    assert_healthy(shim)
