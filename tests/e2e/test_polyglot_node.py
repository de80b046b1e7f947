"""A Node.js client (@grpc/grpc-js + @grpc/proto-loader) loads protos/ as they are and calls the server."""

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.models_helpers import create_from_gguf

CLIENT = Path(__file__).resolve().parents[1] / "polyglot" / "client.js"


def test_node_grpc_client_version_list_show(server, tmp_path):
    if shutil.which("node") is None:
        pytest.skip("node is not installed")
    assert (CLIENT.parent / "node_modules" / "@grpc" / "grpc-js").is_dir(), "run `make test` (installs npm deps)"
    create_from_gguf(server.stub, tmp_path, "polyglot")
    out = subprocess.run(["node", str(CLIENT), server.target, "polyglot"], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    reply = json.loads(out.stdout)
    assert reply["version"]["version"]
    assert [m["name"] for m in reply["list"]["models"]] == ["polyglot:latest"]
    assert reply["list"]["models"][0]["details"]["family"] == "llama"
    assert reply["show"]["model_info"]["fields"]["general.architecture"]["stringValue"] == "llama"
    assert reply["missing"] == {"code": 5, "details": "model 'no-such-model' not found"}
