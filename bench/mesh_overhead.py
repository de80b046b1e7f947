"""What metrics and auth cost per request: /api/show and gRPC Show p50, plain vs with both, in one run.

Two servers, each in its own process and each the gRPC service plus the REST shim in that process (as
`corral serve` runs them), over one store with a tiny model:
  * plain: no interceptors, no REST metrics, no keys (create_server(metrics=False), create_app(metrics_enabled=False));
  * mesh: Prometheus metrics on both sides, bearer keys checked on REST and again on the shim's gRPC hop,
    the drain counter (what `corral serve` runs with CORRAL_API_KEYS set).
Both clients send the Authorization header, over kept-open connections. The servers are measured
interleaved (bench.harness.paired) in each of several rounds; each figure is the median over rounds of
that round's p50. Target: the mesh
server's /api/show p50 <= 1.05x the plain one's. Run under `flock /tmp/corral-bench.lock`.
"""

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.harness import free_port, paired  # noqa: E402
from corral.protos.ollama.v1 import ollama_pb2 as pb  # noqa: E402
from corral.protos.ollama.v1 import ollama_pb2_grpc as pb_grpc  # noqa: E402
from tests.gguf_models import write_llama_gguf  # noqa: E402
from tests.models_helpers import upload  # noqa: E402

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "7"))
REQUESTS = int(os.environ.get("BENCH_REQUESTS", "400"))
KEY = "bench-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


def serve(kind: str, store: str, grpc_port: int, http_port: int) -> None:
    """Child process: one server of `kind` (plain or mesh) until killed."""
    from corral.rest_shim.app import create_app
    from corral.rest_shim.http import create_http_server
    from corral.service.drain import Drain
    from corral.service.server import create_server
    from corral.store.models import ModelStore

    mesh = kind == "mesh"
    server, _, port = create_server(ModelStore(Path(store)), f"127.0.0.1:{grpc_port}", keys=[KEY] if mesh else None,
                                    drain=Drain() if mesh else None, metrics=mesh)
    server.start()
    app = create_app(f"127.0.0.1:{port}", keys=[KEY] if mesh else None, metrics_enabled=mesh)
    http = create_http_server(app, "127.0.0.1", http_port, threads=16)
    http.serve()


def start(kind: str, store: str):
    grpc_port, http_port = free_port(), free_port()
    proc = subprocess.Popen([sys.executable, __file__, "--serve", kind, store, str(grpc_port), str(http_port)])
    url = f"http://127.0.0.1:{http_port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            requests.get(url + "/", timeout=1)
            break
        except requests.RequestException:
            time.sleep(0.1)
    return proc, url, f"127.0.0.1:{grpc_port}"


def main() -> None:
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP", "/var/tmp")) as tmp:
        store = os.path.join(tmp, "models")
        servers = {kind: start(kind, store) for kind in ("plain", "mesh")}
        try:
            gguf = write_llama_gguf(Path(tmp) / "tiny.gguf")
            with grpc.insecure_channel(servers["plain"][2]) as ch:
                stub = pb_grpc.OllamaStub(ch)
                req = pb.CreateRequest(model="tiny")
                req.files["model.gguf"] = upload(stub, gguf)
                list(stub.Create(req))
            with contextlib.ExitStack() as open_:
                sessions = {k: open_.enter_context(requests.Session()) for k in servers}
                shows = {k: pb_grpc.OllamaStub(open_.enter_context(grpc.insecure_channel(target))).Show
                         for k, (_, _, target) in servers.items()}
                meta = [("authorization", f"Bearer {KEY}")]

                def rest_call(kind):
                    sessions[kind].post(servers[kind][1] + "/api/show", json={"model": "tiny"},
                                        headers=AUTH).raise_for_status()

                def rpc_call(kind):
                    shows[kind](pb.ShowRequest(model="tiny"), metadata=meta)

                rest = paired(rest_call, list(servers), ROUNDS, REQUESTS)
                rpc = paired(rpc_call, list(servers), ROUNDS, REQUESTS)
        finally:
            for proc, _, _ in servers.values():
                proc.kill()
                proc.wait()
    r = {k: statistics.median(v) for k, v in rest.items()}
    g = {k: statistics.median(v) for k, v in rpc.items()}
    ratio = r["mesh"] / r["plain"]
    print(f"mesh overhead: {ROUNDS} rounds x {REQUESTS} requests, kept-open connections; median of round p50s")
    print(f"  /api/show   plain {r['plain']:.3f} ms   metrics+auth {r['mesh']:.3f} ms   "
          f"{ratio:.3f}x  (target <= 1.05x: {'ok' if ratio <= 1.05 else 'MISSED'})")
    print(f"  gRPC Show   plain {g['plain']:.3f} ms   metrics+auth {g['mesh']:.3f} ms   {g['mesh'] / g['plain']:.3f}x")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", nargs=4, metavar=("KIND", "STORE", "GRPC_PORT", "HTTP_PORT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve[0], args.serve[1], int(args.serve[2]), int(args.serve[3]))
    else:
        main()
