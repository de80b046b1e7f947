"""A runner process killed mid-request (SIGKILL, as the OOM killer does): that request gets Ollama's 500
text for a crashed runner, and the next request loads the model again and succeeds. Over REST, for a
generation and for an embedding, streamed and not.

(tests/e2e/test_inference_lifecycle.py covers the streamed generate through the ollama client; here the
status code of a non-streamed reply, the embed path, which goes through the batcher, and ps.)
"""

from __future__ import annotations

import os
import signal
import threading
import time

import requests

import tests.gguf_models as gm
from corral.protos.ollama.v1 import ollama_pb2 as pb
from tests.models_helpers import upload

KILLED = "llama runner process has terminated: signal: killed"
LONG = {"num_predict": 100000, "temperature": 0, "num_ctx": 16384}


def create(server, tmp_path, name, writer, **kw):
    path = writer(tmp_path / f"{name}.gguf", **kw)
    req = pb.CreateRequest(model=name)
    req.files["model.gguf"] = upload(server.stub, path)
    list(server.stub.Create(req))


def runner_of(server, timeout=20.0):
    """The one loaded runner, once it is loaded."""
    sched = server.servicer.inference.engine.scheduler
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = sched.running()
        if rows:
            return rows[0]["runner"]
        time.sleep(0.01)
    raise AssertionError("no runner started")


def kill_during(server, post) -> tuple[requests.Response, int]:
    """Runs post() on a thread, SIGKILLs the runner while it serves it; returns post()'s reply and the
    killed runner's pid."""
    reply: list[requests.Response] = []
    thread = threading.Thread(target=lambda: reply.append(post()))
    thread.start()
    runner = runner_of(server)
    time.sleep(0.3)  # well inside the request (it takes seconds), past the load
    assert thread.is_alive(), "the request ended before the kill"
    os.kill(runner.pid, signal.SIGKILL)
    thread.join(60)
    assert reply, "the request did not end"
    return reply[0], runner.pid


def reloaded(server, killed: int) -> bool:
    """The model runs in a new runner process now."""
    (row,) = server.servicer.inference.engine.scheduler.running()
    return row["runner"].pid != killed and row["runner"].alive


def test_generate_killed_mid_request_is_500_then_reloads(server, shim, tmp_path):
    create(server, tmp_path, "victim", gm.write_llama_gguf, n_ctx=16384)
    url = shim.url + "/api/generate"
    r, killed = kill_during(server, lambda: requests.post(url, json={"model": "victim", "prompt": "hi",
                                                                     "stream": False, "options": LONG}, timeout=120))
    assert (r.status_code, r.json()) == (500, {"error": KILLED})
    assert server.servicer.inference.engine.scheduler.running() == []  # the dead runner is dropped
    again = requests.post(url, json={"model": "victim", "prompt": "hi", "stream": False,
                                     "options": {"num_predict": 3, "num_ctx": 16384}}, timeout=120).json()
    assert again["done"] and again["eval_count"] == 3
    assert reloaded(server, killed)


def test_embed_killed_mid_request_is_500_then_reloads(server, shim, tmp_path):
    create(server, tmp_path, "bert", gm.write_bert_gguf)
    url = shim.url + "/api/embed"
    many = [" ".join(gm.WORDS[i % len(gm.WORDS)] for i in range(j, j + 120)) for j in range(8000)]  # seconds here
    r, killed = kill_during(server, lambda: requests.post(url, json={"model": "bert", "input": many}, timeout=120))
    assert (r.status_code, r.json()) == (500, {"error": KILLED})
    again = requests.post(url, json={"model": "bert", "input": ["still serving"]}, timeout=120)
    assert again.status_code == 200 and len(again.json()["embeddings"]) == 1
    assert reloaded(server, killed)


def test_streamed_generate_killed_ends_with_the_error_line(server, shim, tmp_path):
    create(server, tmp_path, "streamer", gm.write_llama_gguf, n_ctx=16384)
    url = shim.url + "/api/generate"
    r = requests.post(url, json={"model": "streamer", "prompt": "hi", "options": LONG}, stream=True, timeout=120)
    lines = r.iter_lines()
    next(lines)
    killed = runner_of(server).pid
    os.kill(killed, signal.SIGKILL)
    rest = [line for line in lines if line]
    assert r.status_code == 200 and rest[-1] == b'{"error":"' + KILLED.encode() + b'"}'
    ps = requests.get(shim.url + "/api/ps", timeout=30).json()
    assert ps["models"] == []  # the dead runner is gone from ps
    again = requests.post(url, json={"model": "streamer", "prompt": "hi", "stream": False,
                                     "options": {"num_predict": 2, "num_ctx": 16384}}, timeout=120).json()
    assert again["eval_count"] == 2 and reloaded(server, killed)
