"""Huge inputs: seconds per request against input size, through the REST shim of a real `corral serve`.

For 100k, 200k, 400k and 800k characters: /api/generate, /api/chat (one message, and turns of 2,000
characters, which the server cuts to the turns that fit), /api/embed with truncate=true and with
truncate=false (refused: "the input length exceeds the context length"). Each size is timed `--rounds`
times (best kept); the last column is time(800k) / time(100k): linear work gives about 8, and work that
only depends on the context (embed, a refused input) stays near 1. The model is the tiny seeded llama of
tests/gguf_models.py with a context of --num-ctx tokens (default 256: above it, reading the kept prompt
grows with the square of the context, whatever the input's length). Not a test: run
`python bench/long_prompt.py`.
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

import grpc
import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.harness import corral_server  # noqa: E402
from corral.protos.ollama.v1 import ollama_pb2 as pb  # noqa: E402
from corral.protos.ollama.v1 import ollama_pb2_grpc as pb_grpc  # noqa: E402
from tests.gguf_models import write_llama_gguf  # noqa: E402
from tests.models_helpers import upload  # noqa: E402

SIZES = (100_000, 200_000, 400_000, 800_000)
BASE = "the sky is blue and the sun is red while water and fire tell a story of earth and air\n"


def text(n: int) -> str:
    return (BASE * (n // len(BASE) + 1))[:n]


def turns(n: int) -> list[dict]:
    body, out = text(n), []
    for i in range(0, n, 2000):
        out += [{"role": "user", "content": body[i : i + 2000]}, {"role": "assistant", "content": "ok"}]
    return out[:-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-ctx", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    options = {"num_ctx": args.num_ctx, "num_predict": 1, "temperature": 0}
    kinds = {
        "generate": lambda n: ("/api/generate", {"prompt": text(n), "stream": False}),
        "chat (1 message)": lambda n: ("/api/chat", {"messages": [{"role": "user", "content": text(n)}],
                                                     "stream": False}),
        "chat (2k turns)": lambda n: ("/api/chat", {"messages": turns(n), "stream": False}),
        "embed truncate=true": lambda n: ("/api/embed", {"input": text(n), "truncate": True}),
        "embed truncate=false": lambda n: ("/api/embed", {"input": text(n), "truncate": False}),
    }
    with tempfile.TemporaryDirectory() as tmp, corral_server() as server:
        stub = pb_grpc.OllamaStub(grpc.insecure_channel(server.target))
        digest = upload(stub, write_llama_gguf(Path(tmp) / "tiny.gguf", n_ctx=max(args.num_ctx, 256)))
        req = pb.CreateRequest(model="tiny")
        req.files["model.gguf"] = digest
        list(stub.Create(req))
        session = requests.Session()
        session.post(server.url + "/api/generate", json={"model": "tiny", "prompt": "hi", "options": options})
        print(f"num_ctx {args.num_ctx}; seconds per request (best of {args.rounds})")
        print(f"{'':24}" + "".join(f"{n // 1000:>8}k" for n in SIZES) + f"{'800k/100k':>11}")
        for name, make in kinds.items():
            row = []
            for n in SIZES:
                path, body = make(n)
                body = dict(body, model="tiny", options=options)
                best = float("inf")
                for _ in range(args.rounds):
                    start = time.perf_counter()
                    reply = session.post(server.url + path, json=body, timeout=600)
                    best = min(best, time.perf_counter() - start)
                    expected = 400 if "false" in name else 200
                    assert reply.status_code == expected, (name, reply.status_code, reply.text[:200])
                row.append(best)
            print(f"{name:24}" + "".join(f"{t:9.3f}" for t in row) + f"{row[-1] / row[0]:11.1f}")


if __name__ == "__main__":
    main()
