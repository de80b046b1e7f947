"""The limit variables (store.config.RequestLimits, HttpLimits, GrpcTransport.max_streams): their
defaults, and a bad value stopping `corral serve` at start-up with an error naming the variable."""

import pytest

from corral.store import config


def test_defaults():
    assert config.RequestLimits.from_env() == config.RequestLimits(
        max_num_ctx=131072, max_num_batch=8192, max_num_predict=131072, max_prompt_bytes=8 << 20,
        max_embed_inputs=65536, max_embed_bytes=16 << 20)
    assert config.HttpLimits.from_env() == config.HttpLimits(
        listen_backlog=1024, max_header_bytes=64 << 10, read_timeout=60.0, min_rate=16 << 10)
    assert config.GrpcTransport.from_env().max_streams == 0  # automatic: capacity + spares


@pytest.mark.parametrize("name,value", [
    ("CORRAL_MAX_NUM_CTX", "0"), ("CORRAL_MAX_NUM_BATCH", "lots"), ("CORRAL_MAX_NUM_PREDICT", "-1"),
    ("CORRAL_MAX_PROMPT_BYTES", "1.5"), ("CORRAL_MAX_EMBED_INPUTS", "0"), ("CORRAL_MAX_EMBED_BYTES", "x"),
    ("CORRAL_LISTEN_BACKLOG", "0"), ("CORRAL_MAX_HEADER_BYTES", "100"), ("CORRAL_REQUEST_READ_TIMEOUT", "0"),
    ("CORRAL_REQUEST_READ_TIMEOUT", "inf"), ("CORRAL_REQUEST_MIN_RATE", "-1"), ("CORRAL_GRPC_MAX_STREAMS", "-2"),
])
def test_a_bad_limit_stops_the_start(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(config.ConfigError) as err:
        config.check_all()
    assert str(err.value).startswith(name + ":")
