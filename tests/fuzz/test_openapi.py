"""The OpenAPI document: committed == generated, every Flask route documented and every documented route
served, and GET /api/openapi.json serves it."""

import json

import requests

from corral.rest_shim import openapi
from tests.contract.test_routes import IMPLIED, normalize

VERBS = ("get", "put", "post", "delete", "patch", "head", "options")


def test_committed_document_is_fresh():
    assert openapi.DOCUMENT.read_text(encoding="utf-8") == openapi.render(), \
        "rest_shim/openapi.json is stale: run make openapi"


def test_document_is_openapi_31_and_valid():
    import schemathesis

    doc = openapi.build()
    assert doc["openapi"] == "3.1.0"
    schema = schemathesis.openapi.from_dict(doc)
    assert len(list(schema.get_all_operations())) >= 25


def _documented() -> set[tuple[str, str]]:
    return {(verb.upper(), normalize(path)) for path, ops in openapi.build()["paths"].items()
            for verb in ops if verb in VERBS}


def _routes() -> set[tuple[str, str]]:
    from corral.rest_shim.app import create_app

    app = create_app("127.0.0.1:1")
    try:
        out = set()
        for rule in app.url_map.iter_rules():
            for verb in rule.methods:
                if verb in IMPLIED and IMPLIED[verb](rule.methods - {verb}):
                    continue  # OPTIONS everywhere and HEAD beside GET: Werkzeug's own, not the API's
                out.add((verb, normalize(rule.rule)))
        return out
    finally:
        app.extensions["corral"].close()


def test_every_route_is_documented_and_every_documented_route_exists():
    documented, routes = _documented(), _routes()
    # HEAD that the proto declares beside GET (/, /api/version, /api/tags) is the route Werkzeug pairs with GET
    documented -= {("HEAD", p) for v, p in documented if v == "GET"}
    assert sorted(routes - documented) == [], "Flask routes missing from the OpenAPI document"
    assert sorted(documented - routes) == [], "documented operations that no Flask route serves"


def test_served_document(shim):
    r = requests.get(f"{shim.url}/api/openapi.json", timeout=10)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("application/json")
    assert r.json() == json.loads(openapi.render())
    assert "/api/chat" in r.json()["paths"] and "/v1/chat/completions" in r.json()["paths"]
