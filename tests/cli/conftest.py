"""Fixtures for the `corral` command-line tests: the CLI runs as a real subprocess (`python -m
corral.service.cli.main ...`) against the `server` fixture's gRPC server, with CORRAL_GRPC_TARGET pointing
at it, exactly as a user's shell would run it; the interactive `run` goes through a pseudo-terminal.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from corral.protos.ollama.v1 import ollama_pb2 as pb
from tests.gguf_models import write_bert_gguf, write_llama_gguf
from tests.models_helpers import upload
from tests.registry.conftest import Registry

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "corral.service.cli.main"]
LICENSE = "MIT License\nCopyright tiny\nline three"
SYSTEM = "You are a tiny test model."


@dataclass
class Cli:
    """Runs `corral ARGS...` in a subprocess against one target."""

    target: str
    env: dict

    def __call__(self, *args: str, input: str | None = None, timeout: float = 120, **env) -> subprocess.CompletedProcess:
        return subprocess.run([*CLI, *args], cwd=ROOT, env={**self.env, **env}, input=input,
                              stdin=None if input is not None else subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=timeout)


def cli_env(target: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OLLAMA_", "CORRAL_"))}
    env.update(CORRAL_GRPC_TARGET=target, COLUMNS="120", TERM="dumb", PYTHONUNBUFFERED="1")
    return env


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path, monkeypatch):
    """The in-process server's registry key (~/.ollama) and docker credentials stay in the tmp folder."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for var in ("DOCKER_CONFIG", "OLLAMA_REGISTRY_USERNAME", "OLLAMA_REGISTRY_PASSWORD", "OLLAMA_HOST"):
        monkeypatch.delenv(var, raising=False)
    return home


@pytest.fixture
def cli(server) -> Cli:
    return Cli(server.target, cli_env(server.target))


def create_model(stub, tmp_path: Path, name: str, kind: str = "llama", gguf_kwargs: dict | None = None,
                 **fields) -> None:
    """A tiny GGUF written, uploaded and created as `name` (fields: system, license, parameters, ...)."""
    path = tmp_path / f"{name.replace('/', '_').replace(':', '_')}.gguf"
    (write_bert_gguf if kind == "bert" else write_llama_gguf)(path, **(gguf_kwargs or {}))
    req = pb.CreateRequest(model=name, **fields)
    req.files["model.gguf"] = upload(stub, path)
    list(stub.Create(req))


@pytest.fixture
def tiny(server, tmp_path):
    """`tiny`: a llama model with a system prompt, a license and greedy parameters (answers repeat)."""
    from corral.protos.structs import dict_to_struct

    create_model(server.stub, tmp_path, "tiny", system=SYSTEM, license=[LICENSE],
                 parameters=dict_to_struct({"temperature": 0, "num_predict": 8, "seed": 7}))
    return server


@pytest.fixture
def registry(tmp_path):
    reg = Registry(tmp_path / "registry").start()
    yield reg
    reg.stop()
