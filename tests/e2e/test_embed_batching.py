"""Dynamic batching of embeddings and the EmbedStream rpc, end to end over gRPC with a real tiny BERT.

Why: concurrent requests now share llama.cpp batches (service/engine/batcher.py), so each caller's rows
must still be its own, in order and equal to what it gets alone; a caller that goes away must not disturb
the others; a huge request must not starve small ones. EmbedStream adds ids, per-item errors, a flow
control window and cancellation, each checked here against the server's own state.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest

from corral.protos.ollama.v1 import ollama_pb2 as pb
from corral.protos.ollama.v1 import ollama_pb2_grpc as pb_grpc
from tests.models_helpers import create_from_gguf

LONG = "the sky is blue " * 200  # longer than the tiny BERT's 128-token context


@pytest.fixture
def bert(server, tmp_path):
    create_from_gguf(server.stub, tmp_path, "bert-batch", kind="bert")
    return server


def engine(server):
    return server.servicer.inference.engine


def batcher_stats(server) -> dict:
    stats = list(engine(server).batchers.stats().values())
    return stats[0] if stats else {}


def texts(n: int, tag: str = "") -> list[str]:
    words = "the sky is blue and the sun is red while water and fire tell a story".split()
    rng = np.random.default_rng(len(tag) + n)
    return [" ".join(rng.choice(words, size=int(rng.integers(3, 12)))) + f" {tag}{i}" for i in range(n)]


def embed(stub, inputs, **kw) -> np.ndarray:
    rows = [list(e.values) for r in stub.Embed(pb.EmbedRequest(model="bert-batch", input=inputs, **kw))
            for e in r.embeddings]
    return np.array(rows, dtype=np.float32).reshape(len(inputs), -1)


def assert_same(got: np.ndarray, want: np.ndarray) -> None:
    assert got.shape == want.shape
    cos = (got * want).sum(axis=1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1))
    assert cos.min() >= 0.9999, cos.min()


def until(predicate, timeout: float = 10.0) -> None:
    deadline = time.time() + timeout
    while not predicate():
        assert time.time() < deadline, "timed out"
        time.sleep(0.01)


def start_huge(stub, n: int):
    """A request of n texts on its own thread; returns (call, thread, result dict) once its first
    message arrived (so it is being served)."""
    call = stub.Embed(pb.EmbedRequest(model="bert-batch", input=texts(n, "huge")))
    out: dict = {"rows": 0, "offsets": []}
    first = threading.Event()

    def read():
        try:
            for reply in call:
                out["offsets"].append(reply.offset)
                out["rows"] += len(reply.embeddings)
                first.set()
            out["end"] = time.perf_counter()
        except grpc.RpcError as exc:
            out["error"] = exc.code()
        first.set()

    thread = threading.Thread(target=read)
    thread.start()
    assert first.wait(60)
    return call, thread, out


# -- dynamic batching --------------------------------------------------------------------------------


def test_concurrent_requests_equal_unbatched(bert):
    inputs = texts(96)
    alone = np.concatenate([embed(bert.stub, [t]) for t in inputs])  # one at a time: nothing to share
    call, thread, huge = start_huge(bert.stub, 20000)  # keeps the runner busy, so the small ones pile up
    with ThreadPoolExecutor(16) as pool:
        together = np.concatenate(list(pool.map(lambda t: embed(bert.stub, [t]), inputs)))
    assert_same(together, alone)
    assert batcher_stats(bert)["widest"] >= 2  # batches held inputs of several callers
    call.cancel()
    thread.join()


def test_multi_input_requests_in_order(bert):
    groups = [texts(k, f"g{k}-") for k in (1, 7, 40, 130, 3)]
    alone = [embed(bert.stub, g) for g in groups]
    with ThreadPoolExecutor(len(groups)) as pool:
        together = list(pool.map(lambda g: embed(bert.stub, g), groups * 3))
    for i, got in enumerate(together):
        assert_same(got, alone[i % len(groups)])


def test_cancelled_member_leaves_the_others_alone(bert):
    inputs = texts(64, "c")
    alone = np.concatenate([embed(bert.stub, [t]) for t in inputs])
    call, thread, huge = start_huge(bert.stub, 50000)
    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(embed, bert.stub, [t]) for t in inputs]
        call.cancel()  # its inputs are in the batches the small requests share
        together = np.concatenate([f.result() for f in futures])
    thread.join()
    assert huge["error"] == grpc.StatusCode.CANCELLED
    assert_same(together, alone)
    until(lambda: batcher_stats(bert)["members"] == 0)  # its pending inputs left with it
    assert batcher_stats(bert)["pending"] == 0


def test_deadline_in_a_batch(bert):
    call, thread, huge = start_huge(bert.stub, 50000)
    with pytest.raises(grpc.RpcError) as err:
        list(bert.stub.Embed(pb.EmbedRequest(model="bert-batch", input=texts(30000, "d")), timeout=0.5))
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    until(lambda: batcher_stats(bert)["members"] == 1)  # only the huge request is left
    assert_same(embed(bert.stub, ["the sky"]), embed(bert.stub, ["the sky"]))
    call.cancel()
    thread.join()


def test_huge_request_does_not_starve_small_ones(bert):
    call, thread, huge = start_huge(bert.stub, 30000)
    finished = []
    with ThreadPoolExecutor(4) as pool:
        for _ in pool.map(lambda t: embed(bert.stub, [t]), texts(40, "s")):
            finished.append(time.perf_counter())
    thread.join()
    assert "error" not in huge and huge["rows"] == 30000
    assert huge["offsets"] == sorted(huge["offsets"]) and huge["offsets"][0] == 0
    assert max(finished) < huge["end"]  # every small request ended before the huge one


def test_too_long_input_fails_only_its_request(bert):
    with ThreadPoolExecutor(8) as pool:
        good = [pool.submit(embed, bert.stub, [t]) for t in texts(20, "ok")]
        bad = pool.submit(embed, bert.stub, ["hello", LONG], truncate=False)
        with pytest.raises(grpc.RpcError) as err:
            bad.result()
        assert all(f.result().shape == (1, 64) for f in good)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details() == "the input length exceeds the context length"


def test_keep_alive_of_each_request_applies(bert):
    embed(bert.stub, ["warm"])
    req = pb.EmbedRequest(model="bert-batch", input=["x"])
    req.keep_alive.FromSeconds(0)
    list(bert.stub.Embed(req))
    until(lambda: not list(bert.stub.ListRunning(pb.ListRunningRequest()).models))
    req.keep_alive.FromSeconds(-1)
    list(bert.stub.Embed(req))
    (model,) = bert.stub.ListRunning(pb.ListRunningRequest()).models
    assert model.expires_at.ToDatetime().year > 2200


# -- EmbedStream -------------------------------------------------------------------------------------


def stream_requests(items, per_message: int = 1, window: int = 0, truncate: bool | None = None, **config):
    cfg = pb.EmbedStreamConfig(model="bert-batch", window=window, **config)
    if truncate is not None:
        cfg.truncate = truncate
    yield pb.EmbedStreamRequest(config=cfg)
    for i in range(0, len(items), per_message):
        yield pb.EmbedStreamRequest(items=[pb.EmbedItem(id=k, text=t) for k, t in items[i : i + per_message]])


def test_stream_order_ids_and_vectors(bert):
    inputs = texts(700, "st")
    items = [(f"doc-{i}", t) for i, t in enumerate(inputs)]
    replies = list(bert.stub.EmbedStream(stream_requests(items, per_message=37)))
    results = [r for reply in replies for r in reply.results]
    assert [r.id for r in results] == [k for k, _ in items]
    assert [r.index for r in results] == list(range(700))
    assert not any(r.error for r in results)
    assert_same(np.array([list(r.values) for r in results], dtype=np.float32), embed(bert.stub, inputs))
    assert len(replies) > 2 and replies[-1].HasField("metrics") and not replies[-1].results
    assert replies[-1].metrics.prompt_eval_count > 700 and replies[-1].metrics.total_duration > 0
    assert not any(r.HasField("metrics") for r in replies[:-1])


def test_stream_bad_item_reported_by_id(bert):
    items = [("a", "hello"), ("too-long", LONG), ("b", "the sky is blue"), ("c", "")]
    replies = list(bert.stub.EmbedStream(stream_requests(items, per_message=2, truncate=False, dimensions=16)))
    results = {r.id: r for reply in replies for r in reply.results}
    assert results["too-long"].error == "the input length exceeds the context length"
    assert list(results["too-long"].values) == [] and results["too-long"].index == 1
    for key in ("a", "b", "c"):
        assert results[key].error == "" and len(results[key].values) == 16
        assert abs(np.linalg.norm(results[key].values) - 1) < 1e-5
    truncated = list(bert.stub.EmbedStream(stream_requests(items)))  # truncate defaults to true
    assert not any(r.error for reply in truncated for r in reply.results)


def test_stream_flow_control_window(bert):
    sent = []

    def endless():
        yield pb.EmbedStreamRequest(config=pb.EmbedStreamConfig(model="bert-batch", window=64))
        for i in range(10**6):
            sent.append(i)
            yield pb.EmbedStreamRequest(items=[pb.EmbedItem(id=str(i), text=f"{LONG[:100]} {i}")])

    # The client never reads. Without BDP probing its transport accepts only gRPC's initial 64 KiB
    # window of responses, so the server soon finds gRPC not taking its results.
    channel = grpc.insecure_channel(bert.target, options=[("grpc.http2.bdp_probe", 0)])
    call = pb_grpc.OllamaStub(channel).EmbedStream(endless())
    inference = bert.servicer.inference
    until(lambda: inference.stream_stats() and inference.stream_stats()[0]["read"] >= 64)

    def settled() -> bool:  # the server stopped reading
        (before,) = inference.stream_stats()
        time.sleep(0.5)
        return inference.stream_stats()[0]["read"] == before["read"]

    until(settled, timeout=60)
    (after,) = inference.stream_stats()
    assert after["peak"] <= 64 and after["unanswered"] == 64
    assert len(sent) < 10**6  # and gRPC held the client's sending back
    # A reader that starts late gets everything that was read, in order.
    first = [r.id for r in next(call).results]
    assert first[0] == "0"
    call.cancel()
    channel.close()
    until(lambda: not inference.stream_stats())
    until(lambda: batcher_stats(bert).get("members", 0) == 0)


def test_stream_window_with_batched_messages(bert):
    items = [(str(i), t) for i, t in enumerate(texts(500, "w"))]
    replies = list(bert.stub.EmbedStream(stream_requests(items, per_message=10, window=20)))
    assert [r.id for reply in replies for r in reply.results] == [k for k, _ in items]
    with pytest.raises(grpc.RpcError) as err:
        list(bert.stub.EmbedStream(stream_requests(items, per_message=30, window=20)))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details() == "a message may carry at most 20 items (the window)"


def test_stream_cancel(bert):
    def slow():
        yield pb.EmbedStreamRequest(config=pb.EmbedStreamConfig(model="bert-batch"))
        for i in range(10**6):
            yield pb.EmbedStreamRequest(items=[pb.EmbedItem(id=str(i), text=f"text {i}")])

    call = bert.stub.EmbedStream(slow())
    got = 0
    for reply in call:
        got += len(reply.results)
        if got > 500:
            call.cancel()
            break
    with pytest.raises(grpc.RpcError) as err:
        next(call)
    assert err.value.code() == grpc.StatusCode.CANCELLED
    inference = bert.servicer.inference
    until(lambda: not inference.stream_stats())
    until(lambda: batcher_stats(bert).get("members", 0) == 0)
    assert embed(bert.stub, ["still serving"]).shape == (1, 64)


def test_stream_loads_once_and_keeps_the_model_while_open(bert):
    def paused():
        cfg = pb.EmbedStreamConfig(model="bert-batch")
        cfg.keep_alive.FromSeconds(0)  # unloaded as soon as the stream ends, not between its items
        yield pb.EmbedStreamRequest(config=cfg, items=[pb.EmbedItem(id="1", text="hello")])
        time.sleep(0.5)
        yield pb.EmbedStreamRequest(items=[pb.EmbedItem(id="2", text="world")])

    pids = set()
    replies = []
    for reply in bert.stub.EmbedStream(paused()):
        replies.append(reply)
        pids.update(row["runner"].pid for row in engine(bert).scheduler.running())
    assert [r.id for reply in replies for r in reply.results] == ["1", "2"]
    assert len(pids) == 1
    until(lambda: not list(bert.stub.ListRunning(pb.ListRunningRequest()).models))


@pytest.mark.parametrize("messages,code,text", [
    ([pb.EmbedStreamRequest(items=[pb.EmbedItem(text="x")])], grpc.StatusCode.INVALID_ARGUMENT,
     "the first EmbedStream message must carry config"),
    ([pb.EmbedStreamRequest(config=pb.EmbedStreamConfig(model="nope"))], grpc.StatusCode.NOT_FOUND,
     'model "nope" not found, try pulling it first'),
    ([pb.EmbedStreamRequest(config=pb.EmbedStreamConfig(model="bert-batch", window=5000))],
     grpc.StatusCode.INVALID_ARGUMENT, "window must be between 0 and 4096"),
    ([pb.EmbedStreamRequest(config=pb.EmbedStreamConfig(model="bert-batch")),
      pb.EmbedStreamRequest(config=pb.EmbedStreamConfig(model="bert-batch"))],
     grpc.StatusCode.INVALID_ARGUMENT, "only the first EmbedStream message may carry config"),
])
def test_stream_errors(bert, messages, code, text):
    with pytest.raises(grpc.RpcError) as err:
        list(bert.stub.EmbedStream(iter(messages)))
    assert (err.value.code(), err.value.details()) == (code, text)


def test_empty_stream(bert):
    assert list(bert.stub.EmbedStream(iter([]))) == []
    (only,) = bert.stub.EmbedStream(iter([pb.EmbedStreamRequest(config=pb.EmbedStreamConfig(model="bert-batch"))]))
    assert only.HasField("metrics") and not only.results
