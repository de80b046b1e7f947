"""Schemathesis over the OpenAPI document against a real server, bounded for `make test` (a fixed seed,
a few cases per operation and mode); `make fuzz` runs the same with a bigger budget and prints figures."""

from tests.fuzz.rest_fuzz import Stats, fuzz, running_server

EXAMPLES = 15


def test_rest_fuzz_finds_no_failures(tmp_path, monkeypatch):
    # set here so that monkeypatch restores them (running_server sets them for the process)
    monkeypatch.setenv("CORRAL_REGISTRY_RETRIES", "1")
    monkeypatch.setenv("OLLAMA_KEEP_ALIVE", "30s")
    monkeypatch.setenv("OLLAMA_MODELS", str(tmp_path / "models"))
    stats = Stats()
    with running_server(tmp_path / "models") as (url, _):
        fuzz(url, EXAMPLES, stats)
    print(stats.report())
    assert not stats.failures, stats.report()
    assert len(stats.tried) >= 25, "every operation was fuzzed"
    assert sum(stats.tried.values()) > 300
