"""OLLAMA_NUM_PARALLEL end to end: requests of one model share one runner and run at once, the next one
waits in the scheduler's queue until a slot frees, and ps shows the latest request's name.

Why through the real server: the slot count is the scheduler's, the sequences are the runner's, and the
waiting request is a client's; only the whole path shows them agreeing.
"""

import threading
import time

import pytest

import tests.gguf_models as gm
from corral.protos.ollama.v1 import ollama_pb2 as pb
from tests.models_helpers import upload

GREEDY = {"temperature": 0, "num_predict": 16}
LONG = {"num_predict": 100000, "temperature": 0, "num_ctx": 16384}


@pytest.fixture(autouse=True)
def _two_slots(monkeypatch):
    monkeypatch.setenv("OLLAMA_NUM_PARALLEL", "2")


def create(server, tmp_path, name, **kw):
    path = gm.write_llama_gguf(tmp_path / f"{name}.gguf", **kw)
    req = pb.CreateRequest(model=name)
    req.files["model.gguf"] = upload(server.stub, path)
    list(server.stub.Create(req))


def scheduler(server):
    return server.servicer.inference.engine.scheduler


def test_parallel_requests_share_one_runner(server, tmp_path, ollama_client):
    create(server, tmp_path, "tiny")
    prompts = ["hello world", "the sky is blue"]
    alone = [ollama_client.generate(model="tiny", prompt=p, options=GREEDY) for p in prompts]
    results: list = [None, None]

    def work(k):
        results[k] = ollama_client.generate(model="tiny", prompt=prompts[k], options=GREEDY)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert [r.response for r in results] == [a.response for a in alone]
    assert [r.context for r in results] == [a.context for a in alone]
    (row,) = scheduler(server).running()
    assert row["runner"].info["num_parallel"] == 2 and row["options"]["num_ctx"] == 256  # the model's length
    assert ollama_client.ps().models[0].context_length == 256  # per request: the runner holds 2 x 256


def test_third_request_waits_for_a_slot(server, tmp_path):
    create(server, tmp_path, "long", n_ctx=16384)
    sched = scheduler(server)

    def start(prompt):
        req = pb.GenerateRequest(model="long", prompt=prompt)
        req.options.update(LONG)
        call = server.stub.Generate(req)
        first = threading.Event()

        def consume():
            try:
                for _ in call:
                    first.set()
            except Exception:  # noqa: BLE001 - cancelled below
                pass

        threading.Thread(target=consume, daemon=True).start()
        return call, first

    def wait_for(cond, timeout=20):
        deadline = time.time() + timeout
        while not cond() and time.time() < deadline:
            time.sleep(0.01)
        return cond()

    a, a_first = start("hello")
    b, b_first = start("the sky")
    assert a_first.wait(30) and b_first.wait(30)  # both generate at once in the one runner
    assert sched.running()[0]["active"] == 2
    c, c_first = start("why")
    assert wait_for(lambda: sched.pending == 1)  # the third waits in the scheduler's queue
    assert not c_first.wait(0.5) and sched.running()[0]["active"] == 2
    a.cancel()
    assert c_first.wait(30)  # a slot freed: the waiting request runs
    assert wait_for(lambda: sched.pending == 0 and sched.running()[0]["active"] == 2)
    b.cancel()
    c.cancel()
    assert wait_for(lambda: sched.running()[0]["active"] == 0)
    assert len(sched.running()) == 1


def test_ps_shows_the_latest_name_of_a_shared_model(server, tmp_path, ollama_client):
    create(server, tmp_path, "first")
    create(server, tmp_path, "second")  # the same bytes: one blob, one runner
    ollama_client.generate(model="first", prompt="hi", options={"num_predict": 1})
    assert [m.name for m in ollama_client.ps().models] == ["first:latest"]
    ollama_client.generate(model="second", prompt="hi", options={"num_predict": 1})
    assert [m.name for m in ollama_client.ps().models] == ["second:latest"]
