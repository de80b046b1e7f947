"""The settings of tracing, log format and pull-on-demand (store/config.py), and the shim's x-ollama-model value."""

import pytest

from corral.protos.ollama.v1 import ollama_pb2 as pb
from corral.rest_shim.client import model_header
from corral.store import config

VARS = ("CORRAL_LOG_FORMAT", "OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_SDK_DISABLED", "CORRAL_PULL_ON_DEMAND", "CORRAL_PULL_INSECURE")


@pytest.fixture(autouse=True)
def _clean(monkeypatch):
    for name in VARS:
        monkeypatch.delenv(name, raising=False)


def test_log_format(monkeypatch):
    assert config.log_format() == "text"
    monkeypatch.setenv("CORRAL_LOG_FORMAT", " JSON ")
    assert config.log_format() == "json"
    monkeypatch.setenv("CORRAL_LOG_FORMAT", "xml")
    with pytest.raises(config.ConfigError, match="CORRAL_LOG_FORMAT: 'xml'"):
        config.check_all()


def test_tracing_is_on_only_when_asked(monkeypatch):
    assert not config.otel_enabled()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317")
    assert config.otel_enabled() and config.otel_exporters() == ["otlp"]
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    assert not config.otel_enabled()
    monkeypatch.delenv("OTEL_SDK_DISABLED")
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    assert not config.otel_enabled()
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console,otlp")
    assert config.otel_enabled() and config.otel_exporters() == ["console", "otlp"]
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "zipkin")
    with pytest.raises(config.ConfigError, match="OTEL_TRACES_EXPORTER: 'zipkin'"):
        config.check_all()


def test_pull_on_demand_switches(monkeypatch):
    assert not config.pull_on_demand() and not config.pull_insecure()
    monkeypatch.setenv("CORRAL_PULL_ON_DEMAND", "1")
    monkeypatch.setenv("CORRAL_PULL_INSECURE", "true")
    assert config.pull_on_demand() and config.pull_insecure()
    monkeypatch.setenv("CORRAL_PULL_ON_DEMAND", "0")
    assert not config.pull_on_demand()


def test_model_header_is_the_short_name_or_nothing():
    assert model_header(pb.ShowRequest(model="tiny")) == "tiny:latest"
    assert model_header(pb.GenerateRequest(model="registry.example.com:5000/team/m:v1")) == \
        "registry.example.com:5000/team/m:v1"
    assert model_header(pb.ChatRequest(model="library/tiny:latest")) == "tiny:latest"
    assert model_header(pb.ListRequest()) == ""
    assert model_header(pb.ShowRequest(model="bad name é")) == ""
    assert model_header(pb.PushBlobRequest(digest="sha256:00")) == ""
