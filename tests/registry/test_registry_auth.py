"""Registry auth against docker-registry: htpasswd Basic and token auth (Basic to the realm, or Ollama's
ed25519-signed token requests), credentials from the environment or a docker config.json."""

import base64
import json

import pytest
import requests
from cryptography.hazmat.primitives import serialization

from corral.service.registry import keys
from corral.service.registry.auth import parse_challenge
from tests.registry.conftest import PASSWORD, USER, make_model


def lines_of(url, path, body):
    reply = requests.post(f"{url}{path}", json=body, stream=True, timeout=120)
    assert reply.status_code == 200, reply.text
    return [json.loads(line) for line in reply.iter_lines() if line]


def roundtrip(reg, shim, store_root, name="team/secret:latest"):
    model, _ = make_model(store_root, f"{reg.host}/{name}")
    pushed = lines_of(shim.url, "/api/push", {"model": model.display, "insecure": True})
    if "error" in pushed[-1]:
        return pushed, None
    requests.delete(f"{shim.url}/api/delete", json={"model": model.display}, timeout=10).raise_for_status()
    pulled = lines_of(shim.url, "/api/pull", {"model": model.display, "insecure": True})
    return pushed, pulled


def test_parse_challenge():
    scheme, params = parse_challenge(
        'Bearer realm="http://127.0.0.1:1/token",service="reg",scope="repository:a/b:pull repository:c/d:pull"')
    assert scheme == "bearer"
    assert params == {"realm": "http://127.0.0.1:1/token", "service": "reg",
                      "scope": "repository:a/b:pull repository:c/d:pull"}
    assert parse_challenge('Basic realm="basic-realm"') == ("basic", {"realm": "basic-realm"})


def test_basic_auth_from_the_environment(basic_registry, shim, store_root, monkeypatch):
    monkeypatch.setenv("OLLAMA_REGISTRY_USERNAME", USER)
    monkeypatch.setenv("OLLAMA_REGISTRY_PASSWORD", PASSWORD)
    pushed, pulled = roundtrip(basic_registry, shim, store_root)
    assert pushed[-1] == {"status": "success"} and pulled[-1] == {"status": "success"}


def test_basic_auth_from_docker_config(basic_registry, shim, store_root, tmp_path, monkeypatch):
    config = tmp_path / "docker"
    config.mkdir()
    auth = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    entry = {f"http://{basic_registry.host}/v2/": {"auth": auth}}  # docker normalises keys like this
    (config / "config.json").write_text(json.dumps({"auths": entry}))
    monkeypatch.setenv("DOCKER_CONFIG", str(config))
    pushed, pulled = roundtrip(basic_registry, shim, store_root)
    assert pushed[-1] == {"status": "success"} and pulled[-1] == {"status": "success"}


def test_basic_auth_without_credentials(basic_registry, shim, store_root):
    lines = lines_of(shim.url, "/api/pull", {"model": f"{basic_registry.host}/team/m", "insecure": True})
    error = lines[-1]["error"]
    assert error.startswith(f"pull model manifest: unauthorized: authentication required by {basic_registry.host}")
    pushed, _ = roundtrip(basic_registry, shim, store_root)
    assert pushed[-1]["error"].startswith("unauthorized: authentication required")


def test_basic_auth_with_a_wrong_password(basic_registry, shim, monkeypatch):
    monkeypatch.setenv("OLLAMA_REGISTRY_USERNAME", USER)
    monkeypatch.setenv("OLLAMA_REGISTRY_PASSWORD", "not-the-password")
    lines = lines_of(shim.url, "/api/pull", {"model": f"{basic_registry.host}/team/m", "insecure": True})
    assert lines[-1] == {"error": "pull model manifest: unauthorized: access denied"}
    assert "not-the-password" not in json.dumps(lines)


def test_basic_auth_error_before_the_stream_with_stream_false(basic_registry, shim):
    reply = requests.post(f"{shim.url}/api/pull", timeout=30,
                          json={"model": f"{basic_registry.host}/team/m", "insecure": True, "stream": False})
    assert reply.status_code == 401
    assert reply.json()["error"].startswith("pull model manifest: unauthorized")


def test_token_auth_with_basic_credentials_and_a_cached_token(token_registry, shim, store_root, monkeypatch):
    monkeypatch.setenv("OLLAMA_REGISTRY_USERNAME", USER)
    monkeypatch.setenv("OLLAMA_REGISTRY_PASSWORD", PASSWORD)
    pushed, pulled = roundtrip(token_registry, shim, store_root)
    assert pushed[-1] == {"status": "success"} and pulled[-1] == {"status": "success"}
    issued = [r for r in token_registry.tokens.requests if r["ok"]]
    assert issued and all(r["auth"].startswith("Basic ") for r in issued)
    # pull and push,pull scopes: a handful of tokens for a dozen registry requests
    assert len(issued) <= 4
    scopes = {(s.rsplit(":", 1)[0], frozenset(s.rsplit(":", 1)[1].split(","))) for r in issued
              for s in r["query"]["scope"]}  # the registry lists actions in no fixed order
    assert ("repository:team/secret", frozenset({"pull", "push"})) in scopes


def test_token_auth_with_ollama_signed_requests(token_registry, shim, store_root, tmp_path):
    home = tmp_path / "home"
    pushed, pulled = roundtrip(token_registry, shim, store_root)
    assert pushed[-1] == {"status": "success"} and pulled[-1] == {"status": "success"}
    # the key was generated as Ollama does, and the token server verified its signatures
    private = (home / ".ollama" / "id_ed25519").read_bytes()
    assert private.startswith(b"-----BEGIN OPENSSH PRIVATE KEY-----")
    key = serialization.load_ssh_private_key(private, password=None)
    pub = (home / ".ollama" / "id_ed25519.pub").read_text()
    assert pub.startswith("ssh-ed25519 ") and pub.split()[1] == keys.public_key_blob(key)
    signed = [r for r in token_registry.tokens.requests if r["ok"]]
    assert signed and all(r["auth"].split(":")[0] == keys.public_key_blob(key) for r in signed)
    assert all({"ts", "nonce", "scope", "service"} <= set(r["query"]) for r in signed)


def test_token_auth_refuses_an_unknown_key(token_registry, shim):
    token_registry.tokens.allowed_keys = {"AAAAnot-this-key"}
    lines = lines_of(shim.url, "/api/pull", {"model": f"{token_registry.host}/team/m", "insecure": True})
    assert lines[-1] == {"error": "pull model manifest: unauthorized: access denied"}


def test_token_auth_with_a_wrong_password(token_registry, shim, monkeypatch):
    monkeypatch.setenv("OLLAMA_REGISTRY_USERNAME", USER)
    monkeypatch.setenv("OLLAMA_REGISTRY_PASSWORD", "wrong")
    lines = lines_of(shim.url, "/api/pull", {"model": f"{token_registry.host}/team/m", "insecure": True})
    assert lines[-1] == {"error": "pull model manifest: unauthorized: access denied"}


def test_cross_repository_mount(token_registry, shim, store_root, monkeypatch):
    monkeypatch.setenv("OLLAMA_REGISTRY_USERNAME", USER)
    monkeypatch.setenv("OLLAMA_REGISTRY_PASSWORD", PASSWORD)
    base, manifest = make_model(store_root, f"{token_registry.host}/team/base:latest", size=2_000_000)
    assert lines_of(shim.url, "/api/push", {"model": base.display, "insecure": True})[-1] == {"status": "success"}
    # a derived model whose layer says where it came from
    from tests.registry.conftest import plain_store

    store = plain_store(store_root)
    derived = manifest.layers[0]
    derived.from_ = base.display
    from corral.store.names import parse_name

    name = parse_name(f"{token_registry.host}/other/derived:latest")
    store.manifests.write(name, manifest)
    token_registry.tokens.requests.clear()
    lines = lines_of(shim.url, "/api/push", {"model": name.display, "insecure": True})
    assert lines[-1] == {"status": "success"}
    model_lines = [l for l in lines if l.get("digest") == derived.digest]
    assert len(model_lines) == 1 and model_lines[0]["completed"] == derived.size  # mounted, not uploaded
    scopes = [s for r in token_registry.tokens.requests for s in r["query"].get("scope", [])]
    assert "repository:team/base:pull" in scopes


@pytest.mark.parametrize("entry", [{"username": USER, "password": PASSWORD}])
def test_docker_config_username_password_entry(basic_registry, tmp_path, monkeypatch, entry):
    from corral.service.registry.auth import basic_credentials

    (tmp_path / "home" / ".docker").mkdir(parents=True)
    (tmp_path / "home" / ".docker" / "config.json").write_text(json.dumps({"auths": {basic_registry.host: entry}}))
    assert basic_credentials(basic_registry.host) == (USER, PASSWORD)
    assert basic_credentials("other.example:5000") is None
