"""Per-request overhead of the REST shim and the service, against floors measured in the same run.

Floors (each in its own process, as the server is):
  * bare Flask: a Flask app on the shim's own WSGI server (rest_shim.http.create_http_server, same settings)
    answering a small JSON GET;
  * bare gRPC: a Python gRPC server answering a unary call with an empty message.
Then `corral serve` (its own process) with 1,000 models:
  * GET /api/version p50, target <= 1.3x the bare-Flask floor;
  * POST /api/show p50, target <= 1.5x (bare Flask + bare gRPC);
  * GET /api/tags p50 with 1,000 models, target < 10 ms;
  * DELETE /api/delete of one of 1,000 models p50, target < 10 ms.

Clients keep their connection open (requests.Session, one gRPC channel), as Ollama's clients do. Figures
on this shared 2-core machine swing from minute to minute, so floors and Corral are measured in turn in
each of several rounds, and each figure is the median over rounds of that round's p50.
Run under `flock /tmp/corral-bench.lock` so that no other benchmark shares the machine.
"""

import argparse
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
from bench.harness import corral_server, free_port, p50_ms, percentile  # noqa: E402
from corral.protos.ollama.v1 import ollama_pb2 as pb  # noqa: E402
from corral.protos.ollama.v1 import ollama_pb2_grpc as pb_grpc
from tests.gguf_models import write_llama_gguf  # noqa: E402

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))
REQUESTS = int(os.environ.get("BENCH_REQUESTS", "200"))  # per figure per round
MODELS = int(os.environ.get("BENCH_MODELS", "1000"))
DELETES = 20  # per round


# -- the floors, each run as a child process of this script --------------------------------------------

def serve_flask_floor(port: int) -> None:
    """A bare Flask app on cheroot with the settings rest_shim/http.py gives it (threads, TCP_NODELAY,
    server name), without the shim's own wrappers (admission, reason phrases)."""
    from cheroot import wsgi
    from flask import Flask, Response

    from corral.rest_shim.http import SPARE_THREADS
    from corral.store.config import Capacity

    app = Flask(__name__)

    @app.get("/version")
    def version():
        return Response('{"version":"0.0.0"}', content_type="application/json; charset=utf-8")

    server = wsgi.Server(("127.0.0.1", port), app, numthreads=Capacity.from_env().requests + SPARE_THREADS,
                         server_name="corral")
    server.nodelay = True
    server.prepare()
    server.serve()


def serve_grpc_floor(port: int) -> None:
    from concurrent import futures

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))

    class Floor(pb_grpc.OllamaServicer):
        def Version(self, request, context):
            return pb.VersionResponse()

    pb_grpc.add_OllamaServicer_to_server(Floor(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    server.wait_for_termination()


def start_floor(kind: str) -> tuple[subprocess.Popen, int]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, __file__, f"--floor-{kind}", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return proc, port


def wait_http(url: str) -> None:
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            requests.get(url, timeout=1)
            return
        except requests.ConnectionError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer")


# -- measuring ----------------------------------------------------------------------------------------

def http_get(session, url):
    def call():
        r = session.get(url)
        r.raise_for_status()
        r.content  # noqa: B018
    return call


def fill(stub, gguf: Path, count: int) -> None:
    from tests.models_helpers import upload

    req = pb.CreateRequest(model="model-0")
    req.files["model.gguf"] = upload(stub, gguf)
    list(stub.Create(req))
    for i in range(1, count):
        stub.Copy(pb.CopyRequest(source="model-0", destination=f"model-{i}"))


def delete_ms(session, url: str, stub, first: int) -> float:
    """p50 of DELETE /api/delete of DELETES models (each put back by a Copy, not timed)."""
    times = []
    for i in range(first, first + DELETES):
        name = f"model-{1 + i % (MODELS - 1)}"
        start = time.perf_counter()
        r = session.delete(url, json={"model": name})
        times.append((time.perf_counter() - start) * 1000)
        r.raise_for_status()
        stub.Copy(pb.CopyRequest(source="model-0", destination=name))
    return percentile(times, 50)


def main() -> None:
    rows: dict[str, list[float]] = {k: [] for k in ("flask", "grpc", "version", "show", "tags", "delete")}
    flask_proc, flask_port = start_floor("flask")
    grpc_proc, grpc_port = start_floor("grpc")
    try:
        with tempfile.TemporaryDirectory() as tmp, corral_server() as srv:
            gguf = write_llama_gguf(Path(tmp) / "small.gguf")
            channel = grpc.insecure_channel(srv.target)
            stub = pb_grpc.OllamaStub(channel)
            fill(stub, gguf, MODELS)
            floor_channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}")
            grpc.channel_ready_future(floor_channel).result(timeout=30)
            floor_stub = pb_grpc.OllamaStub(floor_channel)
            wait_http(f"http://127.0.0.1:{flask_port}/version")
            with requests.Session() as floor_http, requests.Session() as s:
                for r in range(ROUNDS):
                    rows["flask"].append(p50_ms(http_get(floor_http, f"http://127.0.0.1:{flask_port}/version"), REQUESTS, warm=5))
                    rows["grpc"].append(p50_ms(lambda: floor_stub.Version(pb.VersionRequest()), REQUESTS, warm=5))
                    rows["version"].append(p50_ms(http_get(s, srv.url + "/api/version"), REQUESTS, warm=5))

                    def show():
                        r = s.post(srv.url + "/api/show", json={"model": f"model-{MODELS // 2}"})
                        r.raise_for_status()
                    rows["show"].append(p50_ms(show, REQUESTS, warm=5))
                    rows["tags"].append(p50_ms(http_get(s, srv.url + "/api/tags"), REQUESTS // 4, warm=5))
                    rows["delete"].append(delete_ms(s, srv.url + "/api/delete", stub, r * DELETES))
            count = len(s.get(srv.url + "/api/tags").json()["models"])
            assert count == MODELS, count
            channel.close()
            floor_channel.close()
    finally:
        for proc in (flask_proc, grpc_proc):
            proc.terminate()
            proc.wait(timeout=30)

    med = {k: statistics.median(v) for k, v in rows.items()}
    version_ratio = statistics.median(v / f for v, f in zip(rows["version"], rows["flask"], strict=True))
    show_ratio = statistics.median(s / (f + g) for s, f, g in zip(rows["show"], rows["flask"], rows["grpc"],
                                                                 strict=True))

    def verdict(ok: bool) -> str:
        return "met" if ok else "NOT MET"

    print(f"overhead: {ROUNDS} rounds x {REQUESTS} requests, kept-open connections; "
          f"medians of per-round p50 (per-round p50s in brackets)")
    fmt = lambda k: " ".join(f"{x:.2f}" for x in rows[k])  # noqa: E731
    print(f"  floor bare Flask (cheroot) GET  {med['flask']:6.2f} ms  [{fmt('flask')}]")
    print(f"  floor bare gRPC unary           {med['grpc']:6.2f} ms  [{fmt('grpc')}]")
    print(f"  GET /api/version                {med['version']:6.2f} ms  [{fmt('version')}]  "
          f"x{version_ratio:.2f} of bare Flask (target <= 1.3: {verdict(version_ratio <= 1.3)})")
    print(f"  POST /api/show                  {med['show']:6.2f} ms  [{fmt('show')}]  "
          f"x{show_ratio:.2f} of Flask+gRPC (target <= 1.5: {verdict(show_ratio <= 1.5)})")
    print(f"  GET /api/tags ({MODELS} models)   {med['tags']:6.2f} ms  [{fmt('tags')}]  "
          f"(target < 10 ms: {verdict(med['tags'] < 10)})")
    print(f"  DELETE /api/delete (1 of {MODELS}) {med['delete']:6.2f} ms  [{fmt('delete')}]  "
          f"(target < 10 ms: {verdict(med['delete'] < 10)})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--floor-flask", type=int)
    parser.add_argument("--floor-grpc", type=int)
    args = parser.parse_args()
    if args.floor_flask:
        serve_flask_floor(args.floor_flask)
    elif args.floor_grpc:
        serve_grpc_floor(args.floor_grpc)
    else:
        main()
