"""Embedding throughput: Corral over gRPC and over the REST shim against llama-cpp-python in one process.

Same model, same thread count, same 1,024 short texts:
  (a) llama-cpp-python directly in this process, with its best n_batch (tried: 16..512);
  (b) Corral's gRPC Embed, one request of 1,024 texts;
  (c) the REST shim with the official `ollama` client: one request of 1,024 texts, and 1,024 requests of
      one text from 4 concurrent clients.
Prints texts/s, the ratios b/a and c/a (target >= 0.8 on a tiny BERT), the first request's latency (the
model load) and the server's memory (server process plus its runner processes). The server runs as its
own process (bench/harness.py), as a user runs it. Not a test: run `python bench/embed.py`.

Options: --model PATH (a GGUF embedding model; default: the tiny seeded BERT of tests/gguf_models.py),
--threads N (default os.cpu_count()), --rounds N (timed repeats; the best is reported).
"""

import argparse
import hashlib
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.harness import corral_server, rss_kib  # noqa: E402
from corral.protos.ollama.v1 import ollama_pb2 as pb  # noqa: E402
from corral.protos.ollama.v1 import ollama_pb2_grpc as pb_grpc
from tests.gguf_models import write_bert_gguf  # noqa: E402

N = 1024
WORDS = "the sky is blue and the sun is red while water and fire tell a story of earth and air".split()


def texts(n: int = N) -> list[str]:
    rng = np.random.default_rng(7)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(5, 12)))) + f" {i}" for i in range(n)]


def best_of(rounds: int, fn) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def direct(model: Path, inputs: list[str], threads: int, rounds: int) -> tuple[float, int]:
    """(a): seconds for all inputs with llama-cpp-python's best n_batch, normalised like Corral's."""
    import llama_cpp

    best, best_batch = float("inf"), 0
    for n_batch in (16, 32, 64, 128, 512):
        llm = llama_cpp.Llama(str(model), embedding=True, n_ctx=0, n_batch=n_batch, n_ubatch=n_batch,
                              n_threads=threads, n_threads_batch=threads, verbose=False)

        def run():
            v = np.asarray(llm.embed(inputs), dtype=np.float32)
            return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)

        run()
        t = best_of(rounds, run)
        if t < best:
            best, best_batch = t, n_batch
        llm.close()
    return best, best_batch


def upload_and_create(target: str, model: Path, name: str) -> None:
    with grpc.insecure_channel(target) as channel:
        stub = pb_grpc.OllamaStub(channel)
        data = model.read_bytes()
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        stub.PushBlob(iter([pb.PushBlobRequest(digest=digest), pb.PushBlobRequest(data=data)]))
        req = pb.CreateRequest(model=name)
        req.files["model.gguf"] = digest
        list(stub.Create(req))


def tree_rss_mib(pid: int) -> float:
    """RSS of a process and all its descendants (the forkserver and the runners are children)."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            total += rss_kib(p)
            for task in Path(f"/proc/{p}/task").iterdir():
                todo.extend(int(c) for c in (task / "children").read_text().split())
        except (OSError, KeyError):
            continue
    return total / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    inputs = texts()
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or write_bert_gguf(Path(tmp) / "tiny-bert.gguf")
        a, a_batch = direct(model, inputs, args.threads, args.rounds)
        print(f"model {model.name}, {N} texts, {args.threads} threads, load average {os.getloadavg()[0]:.1f}")
        print(f"(a) llama-cpp-python direct, n_batch={a_batch}: {N / a:8.0f} texts/s")
        os.environ["OLLAMA_NUM_PARALLEL"] = os.environ.get("OLLAMA_NUM_PARALLEL", "1")
        with corral_server() as server:
            import ollama

            upload_and_create(server.target, model, "bench-embed")
            options = {"num_thread": args.threads}
            base_rss = tree_rss_mib(server.proc.pid)
            channel = grpc.insecure_channel(server.target, options=[("grpc.max_receive_message_length", 1 << 28)])
            stub = pb_grpc.OllamaStub(channel)
            opts = pb.EmbedRequest(model="bench-embed", input=["warm up"])
            opts.options.update(options)
            start = time.perf_counter()
            list(stub.Embed(opts))
            first = time.perf_counter() - start

            req = pb.EmbedRequest(model="bench-embed", input=inputs)
            req.options.update(options)
            b = best_of(args.rounds, lambda: list(stub.Embed(req)))

            client = ollama.Client(host=server.url)
            c1 = best_of(args.rounds, lambda: client.embed(model="bench-embed", input=inputs, options=options))
            clients = [ollama.Client(host=server.url) for _ in range(4)]

            def many():
                def worker(k):
                    for text in inputs[k::4]:
                        clients[k].embed(model="bench-embed", input=text, options=options)

                threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()

            c2 = best_of(max(1, args.rounds - 1), many)
            loaded_rss = tree_rss_mib(server.proc.pid)
            channel.close()
        print(f"(b) gRPC Embed, 1 request of {N}:       {N / b:8.0f} texts/s   b/a = {a / b:.2f}")
        print(f"(c) REST + ollama client, 1 x {N}:      {N / c1:8.0f} texts/s   c/a = {a / c1:.2f}")
        print(f"(c) REST + ollama client, {N} x 1 (4 clients): {N / c2:8.0f} texts/s   c/a = {a / c2:.2f}")
        print(f"first request (model load + 1 text): {first * 1000:.0f} ms")
        print(f"server memory: {base_rss:.0f} MiB idle, {loaded_rss:.0f} MiB with the model loaded "
              f"(server + runner processes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
