"""The official `ollama` npm client embeds, generates and chats against the REST shim over real HTTP."""

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.models_helpers import create_from_gguf

SCRIPT = Path(__file__).resolve().parents[1] / "polyglot" / "ollama_client.mjs"


def test_npm_ollama_client(shim, tmp_path):
    if shutil.which("node") is None:
        pytest.skip("node is not installed")
    assert (SCRIPT.parent / "node_modules" / "ollama").is_dir(), "run `make test` (installs npm deps)"
    create_from_gguf(shim.server.stub, tmp_path, "npm-model")
    run = subprocess.run(["node", str(SCRIPT), shim.url, "npm-model"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    vectors = out["embed"]["embeddings"]
    assert len(vectors) == 2 and all(abs(sum(v * v for v in vec) - 1) < 1e-4 for vec in vectors)
    assert out["generate"]["done"] is True and out["generate"]["eval_count"] == 5
    assert out["generate"]["done_reason"] == "length"
    assert out["generatePieces"] >= 2 and out["generateLast"]["done"] is True
    assert out["chat"]["message"]["role"] == "assistant" and out["chat"]["done"] is True
    assert out["chatPieces"] >= 2 and out["chatLast"]["done"] is True
    assert [m["name"] for m in out["ps"]["models"]] == ["npm-model:latest"]
    assert out["missing"] == {"status": 404, "error": "model 'no-such-model' not found"}


OPENAI_SCRIPT = SCRIPT.parent / "openai_client.mjs"


def test_npm_openai_client(shim, tmp_path):
    if shutil.which("node") is None:
        pytest.skip("node is not installed")
    assert (SCRIPT.parent / "node_modules" / "openai").is_dir(), "run `make test` (installs npm deps)"
    create_from_gguf(shim.server.stub, tmp_path, "chat-model")
    create_from_gguf(shim.server.stub, tmp_path, "embed-model", kind="bert")
    run = subprocess.run(["node", str(OPENAI_SCRIPT), shim.url + "/v1", "chat-model", "embed-model"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    chat = out["chat"]
    assert chat["object"] == "chat.completion" and chat["choices"][0]["finish_reason"] == "length"
    assert chat["usage"]["completion_tokens"] == 6
    assert out["streamText"] == chat["choices"][0]["message"]["content"] and out["streamFinish"] == "length"
    data = out["embeddings"]["data"]
    assert [d["index"] for d in data] == [0, 1]
    assert all(abs(sum(v * v for v in d["embedding"]) - 1) < 1e-4 for d in data)
    assert out["missing"]["status"] == 404 and out["missing"]["type"] == "not_found_error"
    assert "not found" in out["missing"]["message"]
