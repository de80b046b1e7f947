"""CORS and the Host guard over real HTTP (spec §11)."""

import requests


def test_no_origin_and_same_origin_pass(shim):
    assert requests.get(shim.url + "/api/version").status_code == 200
    host = shim.url.split("//")[1]
    assert requests.get(shim.url + "/api/version", headers={"Origin": f"http://{host}"}).status_code == 200


def test_allowed_origin_is_echoed_and_preflight_answers_204(shim):
    r = requests.get(shim.url + "/api/version", headers={"Origin": "http://localhost:3000"})
    assert r.status_code == 200 and r.headers["Access-Control-Allow-Origin"] == "http://localhost:3000"
    r = requests.options(shim.url + "/api/chat", headers={
        "Origin": "app://obsidian.md", "Access-Control-Request-Method": "POST"})
    assert r.status_code == 204
    assert "POST" in r.headers["Access-Control-Allow-Methods"]
    assert r.headers["Access-Control-Max-Age"] == str(12 * 3600)


def test_foreign_origin_is_refused(shim):
    r = requests.get(shim.url + "/api/tags", headers={"Origin": "https://evil.example"})
    assert (r.status_code, r.text) == (403, "")
    r = requests.get(shim.url + "/api/tags", headers={"Origin": "chrome-extension://abc"})
    assert r.status_code == 403


def test_ollama_origins_extends_the_list(store_root, monkeypatch, server):
    monkeypatch.setenv("OLLAMA_ORIGINS", "chrome-extension://*,https://*.example.org")
    from corral.rest_shim.app import create_app

    app = create_app(server.target)
    client = app.test_client()
    assert client.get("/api/version", headers={"Origin": "chrome-extension://abc"}).status_code == 200
    assert client.get("/api/version", headers={"Origin": "https://ui.example.org"}).status_code == 200
    assert client.get("/api/version", headers={"Origin": "https://ui.example.com"}).status_code == 403


def test_rebinding_host_is_refused_on_loopback(shim):
    r = requests.get(shim.url + "/api/tags", headers={"Host": "attacker.example.com"})
    assert (r.status_code, r.text) == (403, "")
    for ok in ("localhost:11434", "127.0.0.1", "myhost.local", "10.1.2.3:80"):
        assert requests.get(shim.url + "/api/version", headers={"Host": ok}).status_code == 200, ok
