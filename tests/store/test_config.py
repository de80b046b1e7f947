"""The one config module: Ollama's reading rules, a clear error naming a variable with a bad value,
and no other module of the package touching os.environ."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from corral.store import config

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name,value", [
    ("OLLAMA_MAX_QUEUE", "many"), ("OLLAMA_NUM_PARALLEL", "-2"), ("OLLAMA_KEEP_ALIVE", "5 minutes"),
    ("OLLAMA_CONTEXT_LENGTH", "4k"), ("CORRAL_MAX_MEMORY", "1.5"), ("CORRAL_REGISTRY_STREAMS", "0"),
    ("CORRAL_REGISTRY_STALL_TIMEOUT", "nan"), ("OLLAMA_HOST", "127.0.0.1:notaport"),
])
def test_a_bad_value_names_its_variable(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(config.ConfigError) as err:
        config.check_all()
    assert str(err.value).startswith(name + ":") and repr(value.strip()) in str(err.value)


def test_values_are_trimmed_of_spaces_and_quotes_and_read_at_each_use(monkeypatch):
    monkeypatch.setenv("OLLAMA_NUM_PARALLEL", " '4' ")
    monkeypatch.setenv("OLLAMA_CONTEXT_LENGTH", "0")  # 0 = automatic
    cfg = config.EngineConfig.from_env()
    assert cfg.num_parallel == 4 and cfg.context_length == 4096
    monkeypatch.setenv("OLLAMA_NUM_PARALLEL", "2")
    assert config.EngineConfig.from_env().num_parallel == 2
    monkeypatch.setenv("OLLAMA_KEEP_ALIVE", "1h30m")
    assert config.keep_alive() == 5400


@pytest.mark.parametrize("value,expected", [
    ("", ("127.0.0.1", 11434)), ("0.0.0.0", ("0.0.0.0", 11434)), ("http://example.com", ("example.com", 80)),
    ("https://example.com", ("example.com", 443)), ("[::1]:9000", ("::1", 9000)), ("'localhost:1234'", ("localhost", 1234)),
])
def test_ollama_host(monkeypatch, value, expected):
    monkeypatch.setenv("OLLAMA_HOST", value)
    assert config.ollama_host() == expected


def test_serve_refuses_to_start_on_a_bad_value(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "OLLAMA_MODELS": str(tmp_path / "m"),
           "OLLAMA_MAX_LOADED_MODELS": "three"}
    proc = subprocess.run([sys.executable, "-m", "corral.service.cli.main", "serve", "--grpc-address",
                           "127.0.0.1:0", "--http-address", "127.0.0.1:0"],
                          env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "OLLAMA_MAX_LOADED_MODELS: invalid integer 'three'" in proc.stderr


def test_only_the_config_module_touches_os_environ():
    offenders = []
    for folder in ("store", "service", "rest_shim"):
        for path in (ROOT / folder).rglob("*.py"):
            if path == ROOT / "store" / "config.py":
                continue
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if (isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv", "putenv")
                        and isinstance(node.value, ast.Name) and node.value.id == "os"):  # not a WSGI environ
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == [], "read settings through corral.store.config: " + ", ".join(offenders)
