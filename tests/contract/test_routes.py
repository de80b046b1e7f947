"""The REST shim's routes and the proto's google.api.http rules describe the same API.

Every rule of every rpc (additional_bindings included) must have a Flask route with the same method and
path whose view calls that rpc, and every Flask route must be backed by a rule, except the few listed
below with their reasons. Path parameters compare by position (`{digest}` == `<digest>`). When the
Ollama REST reference (shared/spec/ollama-api.md) is present, its endpoint headings must be exactly the
rules plus the listed routes without an rpc.
"""

from __future__ import annotations

import ast
import inspect
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from google.api import annotations_pb2

from corral.protos.ollama.v1 import ollama_pb2 as pb

ROOT = Path(__file__).resolve().parents[2]

# -- the exceptions, all in one place ----------------------------------------------------------------

# (method, path) of routes that deliberately have no rpc.
ROUTES_WITHOUT_RPC = {
    ("GET", "/"): 'liveness text "Ollama is running", answered by the shim itself',
    ("HEAD", "/"): "liveness probe, answered by the shim itself",
}
# Routes for operators, not part of Ollama's REST contract (so not in its reference either).
OPERATOR_ROUTES = {
    ("GET", "/metrics"): "Prometheus exposition of the process's registry (rest_shim/metrics.py)",
    ("GET", "/api/openapi.json"): "the OpenAPI document of this REST surface (rest_shim/openapi.py)",
}
# The OpenAI-compatible API (rest_shim/openai_api.py): routes of another vendor's contract, so they carry
# no google.api.http rule of ours; each is a translation onto the rpc named here, which its view must call.
OPENAI_ROUTES = {
    ("POST", "/v1/chat/completions"): "Chat",
    ("POST", "/v1/completions"): "Generate",
    ("POST", "/v1/embeddings"): "Embed",
    ("GET", "/v1/models"): "List",
    ("GET", "/v1/models/{}"): "Show",
}
# rpc name -> why it has no route.
RPCS_WITHOUT_ROUTE: dict[str, str] = {
    "EmbedStream": "a bidirectional stream (indexing a corpus with flow control); REST has no equivalent, "
    "REST clients send lists to POST /api/embed",
}
# Methods Werkzeug adds to routes by itself; they need no rule.
# OPTIONS: on every route (CORS preflight, answered by rest_shim/guards.py before any view runs).
# HEAD: on every route that allows GET (HTTP's GET without the body). Ollama answers HEAD only where
#   the REST reference says so (/, /api/version, /api/tags, /api/blobs/:digest), and those HEAD routes are
#   rules in the proto; HEAD on GET /api/ps is this automatic one.
IMPLIED = {"OPTIONS": lambda methods: True, "HEAD": lambda methods: "GET" in methods}

# ----------------------------------------------------------------------------------------------------

PATTERNS = ("get", "put", "post", "delete", "patch")


def normalize(path: str) -> str:
    """Path parameters become "{}" so proto templates and Flask rules compare by position."""
    return re.sub(r"\{[^}]*\}|<[^>]*>", "{}", path)


def http_rules(rule) -> list[tuple[str, str]]:
    """(METHOD, path) of an HttpRule and of its additional_bindings."""
    kind = rule.WhichOneof("pattern")
    if kind is None:
        out = []
    elif kind == "custom":
        out = [(rule.custom.kind.upper(), rule.custom.path)]
    else:
        assert kind in PATTERNS, kind
        out = [(kind.upper(), getattr(rule, kind))]
    for extra in rule.additional_bindings:
        out += http_rules(extra)
    return out


def proto_rules() -> dict[tuple[str, str], str]:
    """(METHOD, normalized path) -> rpc name, for every rule of every rpc."""
    rules: dict[tuple[str, str], str] = {}
    for method in pb.DESCRIPTOR.services_by_name["Ollama"].methods:
        options = method.GetOptions()
        if not options.HasExtension(annotations_pb2.http):
            continue
        for verb, path in http_rules(options.Extensions[annotations_pb2.http]):
            key = (verb, normalize(path))
            assert key not in rules, f"{verb} {path} is bound to both {rules[key]} and {method.name}"
            rules[key] = method.name
    return rules


@pytest.fixture(scope="module")
def app():
    from corral.rest_shim.app import create_app

    app = create_app("127.0.0.1:1")
    yield app
    app.extensions["corral"].close()


def flask_routes(app) -> dict[tuple[str, str], str]:
    """(METHOD, normalized path) -> endpoint, for every method of every Flask rule."""
    routes = {}
    for rule in app.url_map.iter_rules():
        for verb in rule.methods:
            routes[(verb, normalize(rule.rule))] = rule.endpoint
    return routes


def implied(app) -> set[tuple[str, str]]:
    out = set()
    for rule in app.url_map.iter_rules():
        for verb in rule.methods:
            if verb in IMPLIED and IMPLIED[verb](rule.methods - {verb}):
                out.add((verb, normalize(rule.rule)))
    return out


def calls_rpc(view, rpc: str) -> bool:
    """Whether the view's source calls `<something>.<rpc>(...)`."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(view)))
    return any(
        isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == rpc
        for n in ast.walk(tree)
    )


def test_normalize():
    assert normalize("/api/blobs/{digest}") == normalize("/api/blobs/<digest>") == "/api/blobs/{}"
    assert normalize("/v1/{name=models/*}/x/<path:rest>") == "/v1/{}/x/{}"


def test_http_rules_include_additional_bindings():
    from google.api import http_pb2

    head = http_pb2.HttpRule(custom={"kind": "HEAD", "path": "/a/{x}"})
    rule = http_pb2.HttpRule(get="/a/{x}", additional_bindings=[head])
    assert http_rules(rule) == [("GET", "/a/{x}"), ("HEAD", "/a/{x}")]


def test_every_rpc_has_a_rule():
    rpcs = {m.name for m in pb.DESCRIPTOR.services_by_name["Ollama"].methods}
    bound = set(proto_rules().values())
    assert sorted(rpcs - bound - set(RPCS_WITHOUT_ROUTE)) == [], "rpcs without a google.api.http rule"
    assert sorted(set(RPCS_WITHOUT_ROUTE) & bound) == [], "RPCS_WITHOUT_ROUTE lists rpcs that have a rule"


def test_every_rule_has_a_route_that_calls_its_rpc(app):
    routes = flask_routes(app)
    problems = []
    for (verb, path), rpc in sorted(proto_rules().items()):
        if rpc in RPCS_WITHOUT_ROUTE:
            continue
        endpoint = routes.get((verb, path))
        if endpoint is None:
            problems.append(f"{rpc}: rule {verb} {path} has no Flask route")
        elif not calls_rpc(app.view_functions[endpoint], rpc):
            problems.append(f"{rpc}: rule {verb} {path} is routed to {endpoint}, which never calls {rpc}")
    assert not problems, "\n".join(problems)


def test_every_route_is_backed_by_a_rule(app):
    rules = proto_rules()
    unbacked = sorted(
        f"{verb} {path} ({endpoint})"
        for (verb, path), endpoint in flask_routes(app).items()
        if (verb, path) not in rules and (verb, path) not in ROUTES_WITHOUT_RPC and (verb, path) not in implied(app)
        and (verb, path) not in OPENAI_ROUTES and (verb, path) not in OPERATOR_ROUTES
    )
    assert not unbacked, "Flask routes without a google.api.http rule (add the rule, or list the route in " \
        "ROUTES_WITHOUT_RPC with the reason):\n  " + "\n  ".join(unbacked)
    routes = flask_routes(app)
    stale = sorted(f"{v} {p}" for (v, p) in ROUTES_WITHOUT_RPC if (v, p) not in routes or (v, p) in rules)
    assert not stale, f"ROUTES_WITHOUT_RPC entries that are no route, or have a rule now: {stale}"


def test_openai_routes_call_their_rpc(app):
    routes = flask_routes(app)
    problems = [f"{verb} {path}" for (verb, path), rpc in OPENAI_ROUTES.items()
                if (verb, path) not in routes or not calls_rpc(app.view_functions[routes[(verb, path)]], rpc)]
    assert not problems, f"OpenAI routes missing or not calling their rpc: {problems}"


def spec_endpoints(text: str) -> set[tuple[str, str]]:
    """(METHOD, normalized path) of the endpoint headings ("### `GET|HEAD /api/tags`") in section 5."""
    section = ("\n" + text).split("\n## 5.", 1)[1].split("\n## 6.", 1)[0]
    out = set()
    for heading in re.findall(r"^### (.*)$", section, re.MULTILINE):
        for verbs, path in re.findall(r"`([A-Z|]+) (/[^`\s]*)`", heading):
            path = re.sub(r":(\w+)", r"{\1}", path)
            out |= {(verb, normalize(path)) for verb in verbs.split("|")}
    return out


def test_spec_endpoint_parser():
    text = "## 5. Endpoints\n### `GET /`, `HEAD /`\n### `GET|HEAD /api/tags`\n### `HEAD /api/blobs/:digest`\n" \
        "### `POST /api/embeddings` (legacy)\n## 6. Other\n### `GET /v2/x`\n"
    assert spec_endpoints(text) == {("GET", "/"), ("HEAD", "/"), ("GET", "/api/tags"), ("HEAD", "/api/tags"),
                                    ("HEAD", "/api/blobs/{}"), ("POST", "/api/embeddings")}


def test_rules_match_the_ollama_rest_reference():
    spec = next((p for p in (ROOT / "shared/spec/ollama-api.md", ROOT.parent / "shared/spec/ollama-api.md")
                 if p.is_file()), None)
    if spec is None:
        pytest.skip("shared/spec/ollama-api.md is not in this checkout")
    documented = spec_endpoints(spec.read_text(encoding="utf-8"))
    ours = set(proto_rules()) | set(ROUTES_WITHOUT_RPC)
    assert sorted(documented - ours) == [], "endpoints of the REST reference with no rule"
    assert sorted(ours - documented) == [], "rules (or listed routes) the REST reference does not have"


@pytest.mark.parametrize("module", ["routes_models", "routes_transfer", "routes_inference"])
def test_a_broken_route_module_fails_the_import(module):
    """A route module that cannot be imported must stop the shim, not silently drop its routes."""
    code = (
        f"import sys; sys.modules['corral.rest_shim.{module}'] = None\n"  # importing it now raises ImportError
        "from corral.rest_shim.app import create_app\n"
        "create_app('127.0.0.1:1')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60,
                          check=False)
    assert done.returncode != 0 and f"corral.rest_shim.{module}" in done.stderr, done.stderr
