"""Memory under 64 concurrent large requests: the server's RSS must stay bounded (issue: admission control).

Three waves against one `corral serve` (its own process), each of 64 requests sent at once:
  * REST POST /api/blobs of 16 MiB each (curl, streaming the file as a user would);
  * gRPC PushBlob of 16 MiB each (1 MiB messages);
  * gRPC Embed of 2,000 texts each on a tiny BERT (a large request by inputs, not by model).
Printed for each wave: the server process's peak RSS growth over its RSS before the wave (VmHWM is reset
per wave by measuring with a sampler thread, since VmHWM only grows), how many requests succeeded and how
many were refused as busy (503 / RESOURCE_EXHAUSTED), and the wall time. Target: every wave grows the
server by less than 256 MiB (64 x 16 MiB held at once would be 1 GiB), and no request fails otherwise.
Run alone: `flock /tmp/corral-bench.lock python bench/concurrent_memory.py`.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.embed import upload_and_create  # noqa: E402
from bench.harness import corral_server, rss_kib  # noqa: E402
from corral.protos.ollama.v1 import ollama_pb2 as pb  # noqa: E402
from corral.protos.ollama.v1 import ollama_pb2_grpc as pb_grpc  # noqa: E402
from tests.gguf_models import write_bert_gguf  # noqa: E402

CONCURRENT = 64
BLOB = 16 << 20
CHUNK = 1 << 20
TEXTS = 2000
TARGET_MIB = 256


class PeakSampler:
    """The largest RSS of a process while the block runs (VmHWM cannot be reset, so sample VmRSS)."""

    def __init__(self, pid: int):
        self.pid, self.peak, self.stop = pid, 0, threading.Event()

    def __enter__(self):
        self.start = self.peak = rss_kib(self.pid)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    def _run(self):
        while not self.stop.wait(0.005):
            self.peak = max(self.peak, rss_kib(self.pid))

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()

    @property
    def growth_mib(self) -> float:
        return (self.peak - self.start) / 1024


def blob_files(tmp: Path) -> list[tuple[Path, str]]:
    out = []
    for i in range(CONCURRENT):
        data = os.urandom(1 << 16) * (BLOB >> 16)
        data = i.to_bytes(8, "little") + data[8:]
        path = tmp / f"blob-{i}.bin"
        path.write_bytes(data)
        out.append((path, "sha256:" + hashlib.sha256(data).hexdigest()))
    return out


def rest_upload(url: str, path: Path, digest: str) -> str:
    out = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-T", str(path), "-X", "POST",
                          f"{url}/api/blobs/{digest}"], capture_output=True, text=True)
    return {"201": "ok", "200": "ok", "503": "busy"}.get(out.stdout, f"HTTP {out.stdout}")


def grpc_upload(stub, path: Path, digest: str) -> str:
    def messages():
        yield pb.PushBlobRequest(digest=digest)
        with open(path, "rb") as f:
            while chunk := f.read(CHUNK):
                yield pb.PushBlobRequest(data=chunk)

    return _grpc_outcome(lambda: stub.PushBlob(messages()))


def grpc_embed(stub, i: int) -> str:
    texts = [f"text {i} number {k} about the sky and the sea" for k in range(TEXTS)]
    return _grpc_outcome(lambda: list(stub.Embed(pb.EmbedRequest(model="bert", input=texts))))


def _grpc_outcome(call) -> str:
    try:
        call()
        return "ok"
    except grpc.RpcError as err:
        return "busy" if err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED else f"{err.code().name}"


def wave(name: str, pid: int, jobs) -> bool:
    start = time.perf_counter()
    with PeakSampler(pid) as sampler, ThreadPoolExecutor(CONCURRENT) as pool:
        outcomes = list(pool.map(lambda job: job(), jobs))
    seconds = time.perf_counter() - start
    counts = {k: outcomes.count(k) for k in sorted(set(outcomes))}
    failed = {k: v for k, v in counts.items() if k not in ("ok", "busy")}
    met = sampler.growth_mib < TARGET_MIB and not failed
    print(f"{name:34s} peak RSS growth {sampler.growth_mib:7.1f} MiB  {seconds:6.2f} s  {counts}  "
          f"(target < {TARGET_MIB} MiB, no failures: {'met' if met else 'NOT met'})", flush=True)
    return met


def main() -> int:
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP", "/var/tmp")) as tmp_name:
        tmp = Path(tmp_name)
        files = blob_files(tmp)
        with corral_server() as srv:
            pid = srv.proc.pid
            upload_and_create(srv.target, write_bert_gguf(tmp / "bert.gguf"), "bert")
            channel = grpc.insecure_channel(srv.target)
            stub = pb_grpc.OllamaStub(channel)
            list(stub.Embed(pb.EmbedRequest(model="bert", input=["warm"])))
            blobs = srv.store / "blobs"
            print(f"{CONCURRENT} concurrent requests per wave; server RSS before: {srv.rss_mib():.0f} MiB")
            ok = wave(f"REST POST /api/blobs x {BLOB >> 20} MiB", pid,
                      [lambda p=p, d=d: rest_upload(srv.url, p, d) for p, d in files])
            for f in blobs.glob("sha256-*"):
                if f.stat().st_size == BLOB:
                    f.unlink()  # uploaded blobs only (the model's blobs stay)
            ok &= wave(f"gRPC PushBlob x {BLOB >> 20} MiB", pid,
                       [lambda p=p, d=d: grpc_upload(stub, p, d) for p, d in files])
            ok &= wave(f"gRPC Embed x {TEXTS} texts", pid, [lambda i=i: grpc_embed(stub, i) for i in range(CONCURRENT)])
            channel.close()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
