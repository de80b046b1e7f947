"""What the nginx hop costs: gRPC Show and /api/show p50 through nginx (deploy/nginx/corral.conf) vs direct.

One `corral serve` replica with a tiny model, Debian's nginx running the shipped config (ports substituted,
tests/mesh/nginx.py) in front of it, a second nginx without the upstream `keepalive` (what it saves), and
shim-only `corral serve --no-grpc` processes, one per gRPC target (the replica, each nginx). Measured in one
run over kept-open connections, the paths interleaved (bench.harness.paired); each figure is the median over
rounds of that round's p50. Target: through nginx <= 1.3x direct. The nginx access log is on, buffered
(`buffer=32k flush=1s`, as a busy production proxy keeps it).
"""

import contextlib
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import grpc
import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.harness import free_port, paired  # noqa: E402
from corral.protos.ollama.v1 import ollama_pb2 as pb  # noqa: E402
from corral.protos.ollama.v1 import ollama_pb2_grpc as pb_grpc  # noqa: E402
from tests.gguf_models import write_llama_gguf  # noqa: E402
from tests.mesh.nginx import Nginx  # noqa: E402
from tests.models_helpers import upload  # noqa: E402

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "7"))
REQUESTS = int(os.environ.get("BENCH_REQUESTS", "400"))
EXE = os.path.join(os.path.dirname(sys.executable), "corral")
META = (("x-ollama-model", "tiny:latest"),)


def serve(tmp: Path, *args: str) -> tuple[subprocess.Popen, str]:
    """`corral serve ARGS` with its own HOME and store; returns the process and its REST url."""
    (tmp / "home").mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OLLAMA_", "CORRAL_"))}
    env.update(OLLAMA_MODELS=str(tmp / "models"), HOME=str(tmp / "home"), PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([EXE, "serve", "--http-address", f"127.0.0.1:{free_port()}", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    found: list[str] = []
    ready = threading.Event()

    def read():
        for line in proc.stdout:
            if m := re.search(r"listening on (http://127\.0\.0\.1:\d+) ", line):
                found.append(m.group(1))
                ready.set()

    threading.Thread(target=read, daemon=True).start()
    if not ready.wait(60):
        proc.kill()
        raise SystemExit("corral serve did not start")
    return proc, found[0]


def main() -> None:
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP", "/var/tmp")) as tmp_text:
        tmp = Path(tmp_text)
        grpc_port = free_port()
        procs = []
        nginx = kept = None
        try:
            replica, _ = serve(tmp / "replica", "--grpc-address", f"127.0.0.1:{grpc_port}")
            procs.append(replica)
            direct = f"127.0.0.1:{grpc_port}"
            with grpc.insecure_channel(direct) as ch:
                stub = pb_grpc.OllamaStub(ch)
                req = pb.CreateRequest(model="tiny")
                req.files["model.gguf"] = upload(stub, write_llama_gguf(tmp / "tiny.gguf"))
                list(stub.Create(req))
            nginx = Nginx(tmp / "nginx", [grpc_port], access_log=os.environ.get("BENCH_ACCESS_LOG", "1") == "1",
                          extra=os.environ.get("BENCH_NGINX_EXTRA", "")).start()
            kept = Nginx(tmp / "nginx-no-keepalive", [grpc_port], keepalive=-1).start()
            shims = {}
            targets = {"direct": direct, "nginx": nginx.target, "keepalive": kept.target}
            for kind, target in targets.items():
                proc, url = serve(tmp / f"shim-{kind}", "--no-grpc", "--grpc-target", target)
                procs.append(proc)
                shims[kind] = url
            with contextlib.ExitStack() as open_:
                channels = {k: open_.enter_context(grpc.insecure_channel(t, [("grpc.enable_http_proxy", 0)]))
                            for k, t in targets.items()}
                sessions = {k: open_.enter_context(requests.Session()) for k in targets}
                shows = {k: pb_grpc.OllamaStub(ch).Show for k, ch in channels.items()}

                def rpc_call(kind):
                    shows[kind](pb.ShowRequest(model="tiny"), metadata=META)

                def rest_call(kind):
                    sessions[kind].post(shims[kind] + "/api/show", json={"model": "tiny"}).raise_for_status()

                rpc = paired(rpc_call, list(targets), ROUNDS, REQUESTS)
                rest = paired(rest_call, list(targets), ROUNDS, REQUESTS)
        finally:
            for proxy in (nginx, kept):
                if proxy is not None:
                    proxy.stop()
            for proc in procs:
                proc.kill()
                proc.wait()
    g = {k: statistics.median(v) for k, v in rpc.items()}
    r = {k: statistics.median(v) for k, v in rest.items()}
    print(f"proxy overhead (nginx, deploy/nginx/corral.conf): {ROUNDS} rounds x {REQUESTS} requests; median of round p50s")
    for label, m in (("gRPC Show", g), ("/api/show", r)):
        ratio = m["nginx"] / m["direct"]
        print(f"  {label:<10}  direct {m['direct']:.3f} ms   through nginx {m['nginx']:.3f} ms   "
              f"{ratio:.3f}x  (target <= 1.3x: {'ok' if ratio <= 1.3 else 'MISSED'})   "
              f"without upstream keepalive {m['keepalive']:.3f} ms {m['keepalive'] / m['direct']:.3f}x")


if __name__ == "__main__":
    main()
