"""The Ollama REST contract for model management, over real HTTP, with the official client and raw requests."""

import hashlib
import json

import ollama
import pytest
import requests

from tests.gguf_models import write_bert_gguf, write_llama_gguf


@pytest.fixture
def tiny_gguf(tmp_path):
    return write_llama_gguf(tmp_path / "tiny.gguf")


def test_official_client_walkthrough(ollama_client, tiny_gguf, tmp_path):
    digest = ollama_client.create_blob(tiny_gguf)
    assert digest == "sha256:" + hashlib.sha256(tiny_gguf.read_bytes()).hexdigest()

    progress = list(ollama_client.create(model="tiny", files={"tiny.gguf": digest}, system="Be brief.", stream=True))
    assert [p.status for p in progress][-2:] == ["writing manifest", "success"]
    final = ollama_client.create(model="tiny2", files={"tiny.gguf": digest}, stream=False)
    assert final.status == "success"

    listed = ollama_client.list()
    assert sorted(m.model for m in listed.models) == ["tiny2:latest", "tiny:latest"]
    entry = next(m for m in listed.models if m.model == "tiny:latest")
    assert entry.details.family == "llama" and entry.details.format == "gguf"
    assert entry.size > tiny_gguf.stat().st_size

    shown = ollama_client.show("tiny")
    assert "\nSYSTEM Be brief.\n" in shown.modelfile
    assert shown.modelinfo["general.architecture"] == "llama"
    assert shown.modelinfo["tokenizer.ggml.tokens"] is None  # arrays are nulled unless verbose
    assert shown.details.family == "llama" and shown.capabilities == ["completion"]

    ollama_client.copy("tiny", "tiny-backup")
    assert "tiny-backup:latest" in {m.model for m in ollama_client.list().models}
    ollama_client.delete("tiny")
    assert "tiny:latest" not in {m.model for m in ollama_client.list().models}

    with pytest.raises(ollama.ResponseError) as info:
        ollama_client.show("tiny")
    assert info.value.status_code == 404
    assert info.value.error == "model 'tiny' not found"


def test_root_version_and_empty_tags(shim):
    r = requests.get(shim.url + "/")
    assert (r.status_code, r.text) == (200, "Ollama is running")
    assert requests.head(shim.url + "/").status_code == 200
    assert requests.get(shim.url + "/api/version").json()["version"]
    r = requests.get(shim.url + "/api/tags")
    assert r.json() == {"models": []}
    assert r.headers["Content-Type"].startswith("application/json")


def test_unknown_paths_wrong_methods_and_bad_json(shim):
    r = requests.get(shim.url + "/api/nope")
    assert (r.status_code, r.text) == (404, "404 page not found")
    r = requests.get(shim.url + "/api/show")
    assert (r.status_code, r.text) == (405, "405 method not allowed")
    r = requests.post(shim.url + "/api/show", data="{not json")
    assert r.status_code == 400 and r.json()["error"].startswith("invalid character")
    r = requests.post(shim.url + "/api/show", data="")
    assert (r.status_code, r.json()) == (400, {"error": "missing request body"})
    r = requests.post(shim.url + "/api/show", json={"model": 5})
    assert r.status_code == 400
    assert r.json()["error"] == "json: cannot unmarshal number into Go struct field ShowRequest.model of type string"


def _upload(shim, path):
    digest = "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    with open(path, "rb") as f:
        r = requests.post(f"{shim.url}/api/blobs/{digest}", data=f)
    return digest, r


def test_blob_status_codes(shim, tiny_gguf):
    digest, r = _upload(shim, tiny_gguf)
    assert r.status_code == 201 and r.text == ""
    assert requests.head(f"{shim.url}/api/blobs/{digest}").status_code == 200
    _, again = _upload(shim, tiny_gguf)
    assert again.status_code == 200
    # the dash form of a digest is accepted as well
    assert requests.head(f"{shim.url}/api/blobs/{digest.replace(':', '-')}").status_code == 200

    r = requests.head(f"{shim.url}/api/blobs/sha256:xyz")
    assert r.status_code == 400
    r = requests.post(f"{shim.url}/api/blobs/sha256:xyz", data=b"abc")
    assert (r.status_code, r.json()) == (400, {"error": "invalid digest format"})
    missing = "sha256:" + "ab" * 32
    assert requests.head(f"{shim.url}/api/blobs/{missing}").status_code == 404
    r = requests.post(f"{shim.url}/api/blobs/{missing}", data=b"not that content")
    actual = "sha256:" + hashlib.sha256(b"not that content").hexdigest()
    assert r.status_code == 400
    assert r.json() == {"error": f'digest mismatch, expected "{missing}", got "{actual}"'}
    assert requests.head(f"{shim.url}/api/blobs/{actual}").status_code == 404  # nothing left behind


def test_create_stream_shapes_and_errors(shim, tiny_gguf):
    digest, _ = _upload(shim, tiny_gguf)
    # form-encoded body (curl -d) is still JSON to us
    r = requests.post(shim.url + "/api/create", data=json.dumps({"model": "m", "files": {"a.gguf": digest}}),
                      headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 200 and r.headers["Content-Type"] == "application/x-ndjson"
    lines = [json.loads(line) for line in r.text.splitlines()]
    assert lines[0] == {"status": "parsing GGUF"}
    assert lines[1] == {"status": f"using existing layer {digest}"}
    assert lines[-2:] == [{"status": "writing manifest"}, {"status": "success"}]

    r = requests.post(shim.url + "/api/create", json={"name": "m2", "files": {"a.gguf": digest}, "stream": False})
    assert (r.status_code, r.json()) == (200, {"status": "success"})
    assert r.headers["Content-Type"].startswith("application/json")

    text_digest = "sha256:" + hashlib.sha256(b"just text").hexdigest()
    requests.post(f"{shim.url}/api/blobs/{text_digest}", data=b"just text").raise_for_status()
    cases = [
        ({"model": "x"}, 400, "neither 'from' or 'files' was specified"),
        ({"model": "bad name!", "from": "m"}, 400, "invalid model name"),
        ({"model": "x", "files": {"../a.gguf": digest}}, 400, "file path must be relative"),
        ({"model": "x", "files": {"a.gguf": ""}}, 400, "invalid digest format"),
        ({"model": "x", "files": {"a.txt": text_digest}}, 400, "unknown type"),
    ]
    for req, status, text in cases:
        r = requests.post(shim.url + "/api/create", json=req)
        assert (r.status_code, r.json()) == (status, {"error": text}), req


def test_legacy_modelfile_create(shim, tiny_gguf):
    digest, _ = _upload(shim, tiny_gguf)
    requests.post(shim.url + "/api/create", json={"model": "base", "files": {"a.gguf": digest}}).raise_for_status()
    modelfile = "FROM base\nSYSTEM You are a test assistant.\nPARAMETER temperature 0.5\nPARAMETER stop <|end|>\n"
    r = requests.post(shim.url + "/api/create", json={"name": "derived", "modelfile": modelfile, "stream": False})
    assert (r.status_code, r.json()) == (200, {"status": "success"})
    shown = requests.post(shim.url + "/api/show", json={"name": "derived"}).json()
    assert shown["system"] == "You are a test assistant."
    assert shown["details"]["parent_model"] in ("", "base:latest")
    lines = shown["parameters"].splitlines()
    assert "temperature                    0.5" in lines
    assert 'stop                           "<|end|>"' in lines
    r = requests.post(shim.url + "/api/create", json={"name": "y", "modelfile": "SYSTEM hi\n"})
    assert (r.status_code, r.json()) == (400, {"error": "no FROM line"})


def test_show_fields_and_verbose(shim, tmp_path):
    path = write_bert_gguf(tmp_path / "bert.gguf")
    digest, _ = _upload(shim, path)
    requests.post(shim.url + "/api/create", json={"model": "emb", "files": {"b.gguf": digest},
                                                 "license": ["MIT", "Apache"]}).raise_for_status()
    shown = requests.post(shim.url + "/api/show", json={"model": "emb"}).json()
    assert shown["capabilities"] == ["embedding"]
    assert shown["license"] == "MIT\nApache"
    assert shown["template"] == "{{ .Prompt }}"
    assert shown["model_info"]["tokenizer.ggml.tokens"] is None
    assert "general.name" not in shown["model_info"]
    assert shown["modified_at"][-6] in "+-" or shown["modified_at"].endswith("Z")
    full = requests.post(shim.url + "/api/show", json={"model": "emb", "verbose": True}).json()
    assert isinstance(full["model_info"]["tokenizer.ggml.tokens"], list)
    assert full["model_info"]["tokenizer.ggml.tokens"][101] == "[CLS]"


def test_copy_delete_status_codes(shim, tiny_gguf):
    digest, _ = _upload(shim, tiny_gguf)
    requests.post(shim.url + "/api/create", json={"model": "a", "files": {"a.gguf": digest}}).raise_for_status()
    r = requests.post(shim.url + "/api/copy", json={"source": "a", "destination": "b"})
    assert (r.status_code, r.text) == (200, "")
    r = requests.post(shim.url + "/api/copy", json={"source": "nope", "destination": "c"})
    assert (r.status_code, r.json()) == (404, {"error": 'model "nope" not found'})
    r = requests.post(shim.url + "/api/copy", json={"source": "a", "destination": "b/c/d/e"})
    assert (r.status_code, r.json()) == (400, {"error": 'destination "b/c/d/e" is invalid'})
    r = requests.delete(shim.url + "/api/delete", json={"name": "b"})
    assert (r.status_code, r.text) == (200, "")
    r = requests.delete(shim.url + "/api/delete", json={"model": "b"})
    assert (r.status_code, r.json()) == (404, {"error": "model 'b' not found"})
    r = requests.delete(shim.url + "/api/delete", json={})
    assert (r.status_code, r.json()) == (400, {"error": "model is required"})
    r = requests.post(shim.url + "/api/show", json={})
    assert (r.status_code, r.json()) == (400, {"error": "model is required"})
    # the model's blob is gone only once no manifest references it
    assert requests.head(f"{shim.url}/api/blobs/{digest}").status_code == 200
    requests.delete(shim.url + "/api/delete", json={"model": "a"}).raise_for_status()
    assert requests.head(f"{shim.url}/api/blobs/{digest}").status_code == 404


def test_streaming_is_flushed_per_line(shim, tiny_gguf):
    digest, _ = _upload(shim, tiny_gguf)
    with requests.post(shim.url + "/api/create", json={"model": "s", "files": {"a.gguf": digest}}, stream=True) as r:
        assert "Content-Length" not in r.headers
        assert r.headers.get("Transfer-Encoding") == "chunked"
        first = next(r.iter_lines())
        assert json.loads(first) == {"status": "parsing GGUF"}


def test_create_with_bad_template_is_400(shim, tiny_gguf):
    digest, _ = _upload(shim, tiny_gguf)
    r = requests.post(shim.url + "/api/create", json={"model": "t", "files": {"a.gguf": digest},
                                                     "template": "{{ if .System }}unclosed"})
    assert r.status_code == 400
    assert r.json()["error"].startswith("template error: ")
