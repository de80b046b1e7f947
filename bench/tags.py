"""/api/tags and /api/show latency (p50, p99) with 10 and with 1,000 models, on a kept-open connection.

Targets: p50 under 10 ms at 1,000 models, and a cost that does not grow with blob sizes (the last row
repeats the 10-model case with a model whose GGUF is ~100x larger). The raw baseline printed beside is
the latency of GET / (the shim and HTTP round trip without any store work), measured in the same run.
"""

import hashlib
import sys
import tempfile
import time
from pathlib import Path

import grpc
import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.harness import corral_server, percentile  # noqa: E402
from corral.protos.ollama.v1 import ollama_pb2 as pb  # noqa: E402
from corral.protos.ollama.v1 import ollama_pb2_grpc as pb_grpc
from tests.gguf_models import write_llama_gguf  # noqa: E402

ROUNDS = 200


def upload(stub, path: Path) -> str:
    data = path.read_bytes()
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    chunks = [pb.PushBlobRequest(digest=digest)] + [
        pb.PushBlobRequest(data=data[i : i + (1 << 20)]) for i in range(0, len(data), 1 << 20)
    ]
    stub.PushBlob(iter(chunks))
    return digest


def fill(stub, gguf: Path, count: int):
    req = pb.CreateRequest(model="model-0")
    req.files["model.gguf"] = upload(stub, gguf)
    list(stub.Create(req))
    for i in range(1, count):
        stub.Copy(pb.CopyRequest(source="model-0", destination=f"model-{i}"))


def latency_ms(session, method, url, **kw) -> tuple[float, float]:
    times = []
    for _ in range(ROUNDS):
        start = time.perf_counter()
        r = session.request(method, url, **kw)
        times.append((time.perf_counter() - start) * 1000)
        r.raise_for_status()
    return percentile(times, 50), percentile(times, 99)


def measure(label: str, gguf: Path, count: int):
    with corral_server() as srv:
        stub = pb_grpc.OllamaStub(grpc.insecure_channel(srv.target))
        fill(stub, gguf, count)
        with requests.Session() as s:
            s.get(srv.url + "/api/tags").raise_for_status()  # warm caches and the connection
            raw = latency_ms(s, "GET", srv.url + "/")
            tags = latency_ms(s, "GET", srv.url + "/api/tags")
            show = latency_ms(s, "POST", srv.url + "/api/show", json={"model": f"model-{count // 2}"})
        print(f"{label:34s} GET / p50 {raw[0]:6.2f} ms | tags p50 {tags[0]:6.2f} p99 {tags[1]:6.2f} ms "
              f"(x{tags[0] / raw[0]:.1f} of raw) | show p50 {show[0]:6.2f} p99 {show[1]:6.2f} ms")


def main():
    with tempfile.TemporaryDirectory() as tmp:
        small = write_llama_gguf(Path(tmp) / "small.gguf")
        big = write_llama_gguf(Path(tmp) / "big.gguf", n_embd=512, n_ff=2048, n_layer=8)
        mib = big.stat().st_size / 2**20
        measure("10 models", small, 10)
        measure("1,000 models", small, 1000)
        measure(f"10 models, {mib:.0f} MiB GGUF", big, 10)


if __name__ == "__main__":
    main()
