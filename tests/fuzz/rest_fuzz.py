"""Schemathesis over rest_shim/openapi.json against a real server: every operation, positive and negative
cases, a fixed seed and a budget per operation.

Pass criterion for every response: no 5xx except the documented one (a 500 whose JSON error names a runner
or storage failure: the fuzzer may ask a real model for anything), never an HTML page or a traceback, every
error as Ollama's JSON error object (OpenAI's on /v1), no hang (each request has a timeout), and the server
answers normally afterwards.

Used by tests/fuzz/test_rest_fuzz.py with a small budget (in `make test`) and by `make fuzz`
(`python -m tests.fuzz.rest_fuzz --examples N`), which prints the requests tried per route and the failures.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import requests
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable

ROOT = Path(__file__).resolve().parents[2]
MODELS = ("tiny", "emb", "tiny:latest")  # present in the fuzzed store, so requests reach the engine
SEED = 1313
# 500s that are documented: a runner that fails, or storage. Texts from the service's errors.
DOCUMENTED_500 = ("runner", "llama", "no space left", "model runner", "model failed to load")


@dataclass
class Stats:
    tried: Counter = field(default_factory=Counter)
    statuses: dict = field(default_factory=lambda: defaultdict(Counter))
    failures: list = field(default_factory=list)

    def report(self) -> str:
        lines = [f"{'route':34} {'requests':>8}  statuses"]
        for label in sorted(self.tried):
            codes = ", ".join(f"{c}x{n}" for c, n in sorted(self.statuses[label].items()))
            lines.append(f"{label:34} {self.tried[label]:>8}  {codes}")
        lines.append(f"total {sum(self.tried.values())} requests, {len(self.failures)} failures")
        lines += [f"FAIL {f}" for f in self.failures[:50]]
        return "\n".join(lines)


@contextlib.contextmanager
def running_server(root: Path):
    """The real gRPC server and REST shim (as tests/conftest.py builds them), with two tiny models."""
    os.environ["OLLAMA_MODELS"] = str(root)
    os.environ.setdefault("CORRAL_REGISTRY_RETRIES", "1")
    os.environ.setdefault("OLLAMA_KEEP_ALIVE", "30s")
    import grpc

    from corral.protos.ollama.v1 import ollama_pb2_grpc as pb_grpc
    from corral.rest_shim.app import create_app
    from corral.rest_shim.http import create_http_server, serve_in_thread
    from corral.service.server import close_servicer, create_server
    from corral.store.models import ModelStore
    from tests.models_helpers import create_from_gguf

    grpc_server, servicer, port = create_server(ModelStore(root), "127.0.0.1:0")
    grpc_server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    stub = pb_grpc.OllamaStub(channel)
    create_from_gguf(stub, root.parent, "tiny")
    create_from_gguf(stub, root.parent, "emb", kind="bert")
    app = create_app(f"127.0.0.1:{port}")
    http = create_http_server(app, "127.0.0.1", 0, threads=16)
    serve_in_thread(http)
    try:
        yield f"http://127.0.0.1:{http.bind_addr[1]}", stub
    finally:
        http.stop()
        app.extensions["corral"].close()
        channel.close()
        grpc_server.stop(grace=None).wait()
        close_servicer(servicer)


def _steer(case, use_model: bool, model: str) -> None:
    """Points some bodies at models that exist (else nearly every request stops at "not found"), caps
    generation (the fuzzer's num_predict would run for minutes) and keeps pull/push off the network."""
    body = case.body
    if not isinstance(body, dict):
        return
    if use_model:
        for key in ("model", "name", "source"):
            if key in body or key == "model":
                body[key] = model
    if case.path in ("/api/pull", "/api/push"):
        body["model"] = "127.0.0.1:9/fuzz/" + str(body.get("model", "x"))[:20]
        body["insecure"] = True
    if case.path in ("/api/generate", "/api/chat"):
        opts = body.get("options") if isinstance(body.get("options"), dict) else {}
        opts["num_predict"] = 4
        body["options"] = opts
    if case.path in ("/v1/chat/completions", "/v1/completions"):
        body["max_tokens"] = 4
    if case.path == "/v1/chat/completions" and use_model and isinstance(body.get("messages"), list):
        # generated messages rarely carry content the shim accepts: give them text and end with a plain user
        # turn, so that the fuzzed turns (roles, tool calls, names) reach the template, the model and 200
        turns = [dict(m, content=m["content"] if isinstance(m.get("content"), str) else "")
                 for m in body["messages"][:3] if isinstance(m, dict)]
        body["messages"] = [*turns, {"role": "user", "content": "hi"}]
    if case.path == "/api/delete" and body.get("model") in MODELS + ("tiny:latest",):
        body["model"] = "not-" + str(body["model"])  # the fuzzed store keeps its models


def _header(response, name: str) -> str:
    """A header of a requests or schemathesis response (the latter keeps lists under lower-case names)."""
    for key, value in response.headers.items():
        if key.lower() == name:
            return value[0] if isinstance(value, list) else value
    return ""


def check(response: requests.Response, label: str) -> str | None:
    """A failure description, or None when the response passes."""
    text = response.text[:4000]
    if "Traceback (most recent call last)" in text or "<html" in text.lower()[:200]:
        return f"{label}: {response.status_code} traceback or HTML: {text[:200]!r}"
    if response.status_code >= 400 and response.status_code not in (404, 405):
        ctype = _header(response, "content-type")
        if response.request.method != "HEAD" and not ctype.startswith("application/json"):
            return f"{label}: {response.status_code} error without JSON body: {ctype} {text[:200]!r}"
    if response.status_code >= 500:
        try:
            error = response.json().get("error")
            error = error.get("message") if isinstance(error, dict) else error
        except ValueError:
            error = None
        if response.status_code == 503 and error and "busy" in error:
            return None
        if response.status_code == 503 and label in ("POST /api/pull", "POST /api/push"):
            return None  # the registry cannot be reached: documented, and what a pull offline answers
        if not (isinstance(error, str) and any(w in error.lower() for w in DOCUMENTED_500)):
            return f"{label}: {response.status_code} {text[:300]!r}"
    return None


@functools.cache
def _document() -> dict:
    return json.loads((ROOT / "rest_shim" / "openapi.json").read_text())


def _stream_lines_conform(op, response: requests.Response, label: str) -> str | None:
    """Each line of an NDJSON answer against the document's schema for that stream."""
    import jsonschema

    document = _document()
    content = document["paths"][op.path][op.method.lower()]["responses"]["200"]["content"]
    components = {"components": document["components"]}  # where the schemas' "#/components/..." point
    validator = jsonschema.Draft202012Validator({**components, **content["application/x-ndjson"]["schema"]})
    errors = jsonschema.Draft202012Validator({**components, "$ref": "#/components/schemas/Error"})
    for number, line in enumerate(response.text.splitlines(), 1):
        if not line.strip():
            continue
        value = json.loads(line)
        problems = list((errors if isinstance(value, dict) and "error" in value else validator).iter_errors(value))
        if problems:
            return f"{label}: NDJSON line {number} does not match the document: {problems[0].message[:300]}"
    return None


def conforms(op, case, response: requests.Response, label: str) -> str | None:
    """A failure description when an answer does not match what the document says of it: a JSON answer
    against its status's schema, each NDJSON line against the stream's; SSE and empty bodies unchecked."""
    ctype = _header(response, "content-type")
    if ctype.startswith("application/x-ndjson") and response.status_code == 200:
        return _stream_lines_conform(op, response, label)
    if not ctype.startswith("application/json") or not response.content:
        return None
    try:
        op.validate_response(response, case=case)
    except Exception as exc:  # schemathesis raises a group of the problems it found
        return f"{label}: {response.status_code} answer does not match the document: {str(exc)[:400]}"
    return None


def fuzz(base_url: str, examples: int, stats: Stats, seed_value: int = SEED, timeout: float = 60.0) -> Stats:
    import schemathesis
    from schemathesis import GenerationMode

    schema = schemathesis.openapi.from_path(str(ROOT / "rest_shim" / "openapi.json"))
    session = requests.Session()
    for result in schema.get_all_operations():
        op = result.ok()
        label = f"{op.method.upper()} {op.path}"
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                strategy = op.as_strategy(generation_mode=mode)
            except Exception as exc:  # an operation schemathesis cannot negate (no parameters): skip that mode
                if mode is GenerationMode.NEGATIVE:
                    continue
                raise AssertionError(f"{label}: no strategy: {exc}") from exc

            @seed(seed_value)
            @settings(max_examples=examples, deadline=None, database=None, derandomize=False,
                      phases=[Phase.explicit, Phase.generate],
                      suppress_health_check=list(HealthCheck), print_blob=False)
            @given(case=strategy, use_model=st.booleans(), model=st.sampled_from(MODELS))
            def run(case, use_model, model):
                _steer(case, use_model, model)
                try:
                    response = case.call(base_url=base_url, session=session, timeout=timeout)
                except requests.Timeout:
                    stats.failures.append(f"{label}: no answer within {timeout}s (hang)")
                    return
                except requests.ConnectionError as exc:
                    # a body schemathesis cannot send (e.g. a header with a newline) is the client's failure
                    if "Invalid" in str(exc):
                        return
                    stats.failures.append(f"{label}: connection error {exc}")
                    return
                stats.tried[label] += 1
                stats.statuses[label][response.status_code] += 1
                problem = check(response, label) or conforms(op, case, response, label)
                if problem:
                    stats.failures.append(problem + f" <- {case.body!r}"[:600])

            try:
                run()
            except Unsatisfiable:  # nothing to make invalid (an operation without parameters or body)
                continue
    assert requests.get(base_url + "/api/version", timeout=10).status_code == 200, "server unhealthy after fuzzing"
    return stats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--examples", type=int, default=200, help="cases per operation and mode")
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args(argv)
    stats = Stats()
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="corral-fuzz-") as tmp, running_server(Path(tmp) / "models") as (url, _):
        fuzz(url, args.examples, stats, args.seed)
    print(stats.report())
    print(f"{time.monotonic() - start:.0f} s, seed {args.seed}, {args.examples} cases per operation and mode")
    return 1 if stats.failures else 0


if __name__ == "__main__":
    sys.exit(main())
