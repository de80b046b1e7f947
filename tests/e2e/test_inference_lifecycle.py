"""Model lifecycle end to end: keep_alive expiry and unload seen through /api/ps, LRU eviction, the
bounded queue's 503, a model that aborts llama.cpp and a runner killed mid-request (errors, while the
server keeps serving), and a client disconnect that stops the runner's work.

Why through the real server: these are the behaviours users see in `ollama ps` and in their clients
(issues #5272, #7773), and they cross every layer: shim, gRPC cancellation, scheduler, runner process.
"""

import threading
import time
from datetime import datetime, timezone

import numpy as np
import ollama
import pytest
import requests

import tests.gguf_models as gm
from corral.protos.ollama.v1 import ollama_pb2 as pb
from tests.models_helpers import upload

LONG = {"num_predict": 100000, "temperature": 0, "num_ctx": 16384}  # ~15 s to fill here


def create(server, tmp_path, name, writer=gm.write_llama_gguf, **kw):
    path = writer(tmp_path / f"{name}.gguf", **kw)
    req = pb.CreateRequest(model=name)
    req.files["model.gguf"] = upload(server.stub, path)
    list(server.stub.Create(req))


def scheduler(server):
    return server.servicer.inference.engine.scheduler


def names(client):
    return [m.name for m in client.ps().models]


def test_ps_fields_and_keep_alive_expiry(server, tmp_path, ollama_client):
    create(server, tmp_path, "short", n_ctx=512)
    ollama_client.generate(model="short", prompt="hi", keep_alive="1s", options={"num_predict": 2})
    (m,) = ollama_client.ps().models
    assert m.name == m.model == "short:latest" and m.size > 0 and m.size_vram == 0 and len(m.digest) == 64
    assert m.context_length == 512 and m.details.family == "llama"
    left = (m.expires_at - datetime.now(timezone.utc)).total_seconds()
    assert 0 < left <= 1.5
    time.sleep(2.5)
    assert ollama_client.ps().models == []


def test_keep_alive_forever_and_zero(server, tmp_path, ollama_client):
    create(server, tmp_path, "m")
    ollama_client.generate(model="m", prompt="hi", keep_alive=-1, options={"num_predict": 1})
    assert ollama_client.ps().models[0].expires_at.year > 2200
    ollama_client.generate(model="m", prompt="hi", keep_alive=0, options={"num_predict": 1})
    assert ollama_client.ps().models == []


def test_lru_eviction(server, tmp_path, ollama_client):
    scheduler(server).max_loaded = 2
    for i, name in enumerate(("a", "b", "c")):
        create(server, tmp_path, name, seed=i)
    for name in ("a", "b", "a", "c"):
        ollama_client.embed(model=name, input="hello")
    assert sorted(names(ollama_client)) == ["a:latest", "c:latest"]


def test_queue_full_503(server, tmp_path, shim):
    create(server, tmp_path, "busy", n_ctx=16384)
    sched = scheduler(server)
    sched.max_queue = 1
    first = requests.post(shim.url + "/api/generate", json={"model": "busy", "prompt": "hi", "options": LONG},
                          stream=True, timeout=60)
    lines = first.iter_lines()
    next(lines)  # generating: the one slot is taken
    waiter = threading.Thread(target=requests.post, args=(shim.url + "/api/embed",),
                              kwargs={"json": {"model": "busy", "input": "x"}, "timeout": 60})
    waiter.start()
    deadline = time.time() + 10
    while sched.pending < 1 and time.time() < deadline:
        time.sleep(0.01)
    r = requests.post(shim.url + "/api/embed", json={"model": "busy", "input": "x"}, timeout=60)
    assert (r.status_code, r.json()) == (503, {"error": "server busy, please try again.  maximum pending requests exceeded"})
    first.close()
    waiter.join(30)
    assert not waiter.is_alive()


def test_model_that_aborts_llama_cpp(server, tmp_path, ollama_client, monkeypatch):
    orig = gm._Weights.f32_matrix  # an F16 token_types tensor makes ggml abort() (llama-cpp-facts.md)
    monkeypatch.setattr(gm._Weights, "f32_matrix", lambda self, r, c, scale=0.1: orig(self, r, c, scale).astype(np.float16))
    create(server, tmp_path, "broken", writer=gm.write_bert_gguf)
    monkeypatch.undo()
    create(server, tmp_path, "fine", writer=gm.write_bert_gguf, seed=3)
    with pytest.raises(ollama.ResponseError) as err:
        ollama_client.embed(model="broken", input="hello")
    assert err.value.status_code == 500
    assert err.value.error == "llama runner process has terminated: signal: aborted (core dumped)"
    assert len(ollama_client.embed(model="fine", input="hello").embeddings) == 1
    assert names(ollama_client) == ["fine:latest"]


def test_truncated_gguf_is_500(server, tmp_path, ollama_client):
    path = gm.write_llama_gguf(tmp_path / "whole.gguf")
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(path.read_bytes()[:-4096])
    req = pb.CreateRequest(model="cut")
    req.files["model.gguf"] = upload(server.stub, cut)
    try:
        list(server.stub.Create(req))
    except Exception:  # noqa: BLE001 - a store that refuses the file at create time is fine too
        pytest.skip("the store rejects truncated GGUF files at create")
    with pytest.raises(ollama.ResponseError) as err:
        ollama_client.generate(model="cut", prompt="hi")
    assert err.value.status_code == 500 and "truncated" in err.value.error


def test_runner_killed_mid_request(server, tmp_path, ollama_client):
    import os
    import signal

    create(server, tmp_path, "victim", n_ctx=16384)
    stream = ollama_client.generate(model="victim", prompt="hi", stream=True, options=LONG)
    next(stream)
    (row,) = scheduler(server).running()
    os.kill(row["runner"].pid, signal.SIGKILL)
    with pytest.raises(ollama.ResponseError) as err:
        for _ in stream:
            pass
    assert err.value.error == "llama runner process has terminated: signal: killed"
    again = ollama_client.generate(model="victim", prompt="hi", options={"num_predict": 3, "num_ctx": 16384})
    assert again.done and again.eval_count == 3


def test_disconnect_stops_runner(server, tmp_path, shim):
    create(server, tmp_path, "long", n_ctx=16384)
    r = requests.post(shim.url + "/api/generate", json={"model": "long", "prompt": "hi", "options": LONG},
                      stream=True, timeout=60)
    lines = r.iter_lines()
    next(lines), next(lines)
    r.close()  # the client goes away: the shim cancels the gRPC call, which cancels the runner's request
    sched = scheduler(server)
    deadline = time.time() + 10
    while sched.running()[0]["active"] and time.time() < deadline:
        time.sleep(0.02)
    assert sched.running()[0]["active"] == 0
    start = time.time()
    quick = requests.post(shim.url + "/api/generate", json={"model": "long", "prompt": "hi", "stream": False,
                                                             "options": {"num_predict": 2, "num_ctx": 16384}}, timeout=60).json()
    assert quick["eval_count"] == 2 and time.time() - start < 3


def test_grpc_deadline_stops_generation(server, tmp_path):
    import grpc

    create(server, tmp_path, "slow", n_ctx=16384)
    req = pb.GenerateRequest(model="slow", prompt="hi")
    req.options.update(LONG)
    load = pb.GenerateRequest(model="slow")  # load first: the deadline is for generating
    load.options.update({"num_ctx": 16384})
    assert list(server.stub.Generate(load))[-1].done_reason == "load"
    start = time.time()
    with pytest.raises(grpc.RpcError) as err:
        for _ in server.stub.Generate(req, timeout=1.0):
            pass
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED and time.time() - start < 5
    quick = pb.GenerateRequest(model="slow", prompt="hi")
    quick.options.update({"num_predict": 2, "num_ctx": 16384})
    start = time.time()
    final = list(server.stub.Generate(quick))[-1]
    assert final.done and final.metrics.eval_count == 2 and time.time() - start < 3
