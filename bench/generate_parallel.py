"""Generation throughput: llama-cpp-python in one process against Corral serving one and four streams.

Same model, same thread count, same prompts, same sampling options (Ollama's defaults with a fixed seed),
measured in the same run, several rounds, medians:
  (a) raw llama-cpp-python in this process: Llama.generate() for one stream (flash attention on, as Corral
      loads completion models; the library's default, off, is printed too);
  (b) Corral over gRPC, one Generate stream at a time (target: b >= 0.9 a);
  (c) Corral over gRPC, four concurrent Generate streams on one runner with OLLAMA_NUM_PARALLEL=4,
      decoded together in one llama.cpp batch (target: aggregate c >= 1.5 b).
tokens/s is generated tokens over wall-clock time from the request to its last token (prompt included);
the "eval" figures are generated tokens over the time after the first token. The server runs as its own
process (bench/harness.py), as a user runs it. Not a test: run `python bench/generate_parallel.py`, under
`flock /tmp/corral-bench.lock` so that no other benchmark shares the machine.

Options: --model PATH (a GGUF completion model; default: a ~50 MB F16 llama written by
tests/gguf_models.py: E=512, 8 layers, 8 heads, F=1408), --threads N (default 2), --rounds N (default 5),
--num-predict N (default 128).
"""

import argparse
import hashlib
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.harness import corral_server  # noqa: E402
from corral.protos.ollama.v1 import ollama_pb2 as pb  # noqa: E402
from corral.protos.ollama.v1 import ollama_pb2_grpc as pb_grpc  # noqa: E402
from tests.gguf_models import write_llama_gguf  # noqa: E402

PARALLEL = 4
NUM_CTX = 2048
PROMPTS = [
    "the sky is blue and the sun is red",
    "tell me a story about a cat and a dog",
    "write code in python for the world",
    "why is the water green in the house",
]
SAMPLING = {"temperature": 0.8, "top_k": 40, "top_p": 0.9, "min_p": 0.0, "repeat_penalty": 1.1, "seed": 42}


def write_model(path: Path) -> Path:
    return write_llama_gguf(path, n_embd=512, n_layer=8, n_head=8, n_ff=1408, dtype="f16", n_ctx=NUM_CTX,
                            name="bench-llama")


class Raw:
    """llama-cpp-python alone: the same sampler chain Corral builds, through Llama.generate()."""

    def __init__(self, model: Path, threads: int, flash_attn: bool):
        import llama_cpp

        self.llama_cpp = llama_cpp
        self.llm = llama_cpp.Llama(str(model), n_ctx=NUM_CTX, n_batch=512, n_threads=threads,
                                   n_threads_batch=threads, flash_attn=flash_attn, verbose=False)
        self.vocab = llama_cpp.llama_model_get_vocab(self.llm.model)

    def run(self, prompt: str, num_predict: int) -> tuple[int, float, float]:
        """(tokens, seconds from the call to the last token, seconds after the first token)."""
        llm = self.llm
        start = time.perf_counter()
        tokens = llm.tokenize(prompt.encode(), add_bos=True, special=True)
        llm.set_seed(SAMPLING["seed"])
        llm.reset()
        n, first = 0, None
        stream = llm.generate(tokens, top_k=SAMPLING["top_k"], top_p=SAMPLING["top_p"], min_p=SAMPLING["min_p"],
                              temp=SAMPLING["temperature"], repeat_penalty=SAMPLING["repeat_penalty"], reset=True)
        for token in stream:
            first = first or time.perf_counter()
            if self.llama_cpp.llama_vocab_is_eog(self.vocab, token):
                break
            llm.detokenize([token])
            n += 1
            if n >= num_predict:
                break
        stream.close()
        end = time.perf_counter()
        return n, end - start, end - (first or end)


def upload_and_create(stub, model: Path, name: str) -> None:
    data = model.read_bytes()
    digest = "sha256:" + hashlib.sha256(data).hexdigest()

    def parts():
        yield pb.PushBlobRequest(digest=digest)
        for i in range(0, len(data), 1 << 20):
            yield pb.PushBlobRequest(data=data[i : i + (1 << 20)])

    stub.PushBlob(parts())
    req = pb.CreateRequest(model=name)
    req.files["model.gguf"] = digest
    list(stub.Create(req))


def corral_one(stub, prompt: str, num_predict: int, threads: int) -> tuple[int, float, float]:
    """(tokens, seconds from the call to the last token, eval seconds as the server measured them)."""
    req = pb.GenerateRequest(model="bench-gen", prompt=prompt, raw=True)
    req.options.update(dict(SAMPLING, num_predict=num_predict, num_thread=threads, num_ctx=NUM_CTX))
    start = time.perf_counter()
    final = None
    for final in stub.Generate(req):
        pass
    end = time.perf_counter()
    assert final is not None and final.done
    return final.metrics.eval_count, end - start, final.metrics.eval_duration / 1e9


def corral_many(stub, num_predict: int, threads: int) -> tuple[int, float, list]:
    """PARALLEL concurrent streams: (all tokens, wall seconds for all of them, per-stream results)."""
    results: list = [None] * PARALLEL
    barrier = threading.Barrier(PARALLEL + 1)

    def work(k):
        barrier.wait()
        results[k] = corral_one(stub, PROMPTS[k % len(PROMPTS)], num_predict, threads)

    workers = [threading.Thread(target=work, args=(k,)) for k in range(PARALLEL)]
    for w in workers:
        w.start()
    barrier.wait()
    start = time.perf_counter()
    for w in workers:
        w.join()
    return sum(r[0] for r in results), time.perf_counter() - start, results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--num-predict", type=int, default=128)
    args = parser.parse_args()
    n_pred = args.num_predict
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP", "/var/tmp")) as tmp:
        model = args.model or write_model(Path(tmp) / "bench-llama.gguf")
        size_mb = model.stat().st_size / 1e6
        raw = Raw(model, args.threads, flash_attn=True)
        raw_default = Raw(model, args.threads, flash_attn=False)
        os.environ["OLLAMA_NUM_PARALLEL"] = str(PARALLEL)
        os.environ.setdefault("OLLAMA_KEEP_ALIVE", "1h")
        with corral_server() as server:
            channel = grpc.insecure_channel(server.target)
            stub = pb_grpc.OllamaStub(channel)
            upload_and_create(stub, model, "bench-gen")
            corral_one(stub, PROMPTS[0], 4, args.threads)  # load the runner
            raw.run(PROMPTS[0], 4)
            raw_default.run(PROMPTS[0], 4)
            a, a0, b, c, a_eval, b_eval, c_lat = [], [], [], [], [], [], []
            for r in range(args.rounds):  # interleaved, so machine noise hits every figure alike
                prompt = PROMPTS[r % len(PROMPTS)]
                n, t, e = raw.run(prompt, n_pred)
                a.append(n / t)
                a_eval.append((n - 1) / e if e else 0.0)
                n, t, _ = raw_default.run(prompt, n_pred)
                a0.append(n / t)
                n, t, e = corral_one(stub, prompt, n_pred, args.threads)
                b.append(n / t)
                b_eval.append((n - 1) / e if e else 0.0)
                n, t, per = corral_many(stub, n_pred, args.threads)
                c.append(n / t)
                c_lat.append(statistics.median(p[1] for p in per))
            channel.close()
    med = statistics.median
    print(f"model {model.name} ({size_mb:.0f} MB), {args.threads} threads, num_predict {n_pred}, "
          f"{args.rounds} rounds (medians), load average {os.getloadavg()[0]:.1f}")
    print(f"(a) llama-cpp-python, one stream, flash attention on:   {med(a):7.1f} tokens/s  (eval {med(a_eval):.1f})")
    print(f"    llama-cpp-python, one stream, library default (off): {med(a0):7.1f} tokens/s")
    print(f"(b) Corral gRPC, one stream:                            {med(b):7.1f} tokens/s  (eval {med(b_eval):.1f})"
          f"   b/a = {med(b) / med(a):.2f}  (target >= 0.9)")
    print(f"(c) Corral gRPC, {PARALLEL} concurrent streams, aggregate:      {med(c):7.1f} tokens/s"
          f"   c/b = {med(c) / med(b):.2f}  (target >= 1.5); median stream {med(c_lat):.2f} s")
    print("rounds a: " + " ".join(f"{x:.0f}" for x in a) + " | b: " + " ".join(f"{x:.0f}" for x in b)
          + " | c: " + " ".join(f"{x:.0f}" for x in c))
    return 0


if __name__ == "__main__":
    sys.exit(main())
