"""The operating variables (store/config.py): keys from the list and the file, the metrics address, the
drain time and the gRPC transport; bad values name the variable; and the server options they become."""

import pytest

from corral.store import config


def test_api_keys_from_list_and_file(monkeypatch, tmp_path):
    monkeypatch.delenv("CORRAL_API_KEYS_FILE", raising=False)
    monkeypatch.setenv("CORRAL_API_KEYS", "")
    assert config.api_keys() == []
    monkeypatch.setenv("CORRAL_API_KEYS", " a1, b2 ,,")
    keys_file = tmp_path / "keys"
    keys_file.write_text("# team keys\nc3\n\n  d4  \n")
    monkeypatch.setenv("CORRAL_API_KEYS_FILE", str(keys_file))
    assert config.api_keys() == ["a1", "b2", "c3", "d4"]
    keys_file.write_text("# nothing but comments\n")
    with pytest.raises(config.ConfigError, match="CORRAL_API_KEYS_FILE: .* holds no key"):
        config.api_keys()
    monkeypatch.setenv("CORRAL_API_KEYS_FILE", str(tmp_path / "missing"))
    with pytest.raises(config.ConfigError, match="CORRAL_API_KEYS_FILE: cannot read"):
        config.api_keys()
    monkeypatch.delenv("CORRAL_API_KEYS_FILE")
    monkeypatch.setenv("CORRAL_API_KEYS", "has space")
    with pytest.raises(config.ConfigError, match="CORRAL_API_KEYS: a key contains white space"):
        config.api_keys()


@pytest.mark.parametrize("value, expected", [
    ("", None), ("127.0.0.1:9100", ("127.0.0.1", 9100)), (":9100", ("0.0.0.0", 9100)), ("[::1]:0", ("::1", 0)),
])
def test_metrics_address(monkeypatch, value, expected):
    monkeypatch.setenv("CORRAL_METRICS_ADDRESS", value)
    assert config.metrics_address() == expected


@pytest.mark.parametrize("variable, value, message", [
    ("CORRAL_METRICS_ADDRESS", "9100", "expected HOST:PORT"),
    ("CORRAL_METRICS_ADDRESS", "host:99999", "expected HOST:PORT"),
    ("CORRAL_DRAIN_SECONDS", "soon", "invalid number"),
    ("CORRAL_DRAIN_SECONDS", "-1", "out of range"),
    ("CORRAL_GRPC_MAX_MESSAGE_BYTES", "10", "below the minimum"),
    ("CORRAL_GRPC_KEEPALIVE_TIME", "x", "invalid number"),
])
def test_bad_values_name_the_variable(monkeypatch, variable, value, message):
    monkeypatch.setenv(variable, value)
    with pytest.raises(config.ConfigError, match=f"{variable}: .*{message}|{variable}: {message}"):
        config.check_all()


def test_transport_becomes_server_options(monkeypatch):
    from corral.service.server import channel_options

    for name in ("CORRAL_GRPC_MAX_MESSAGE_BYTES", "CORRAL_GRPC_KEEPALIVE_TIME", "CORRAL_GRPC_KEEPALIVE_TIMEOUT",
                 "CORRAL_GRPC_MIN_PING_INTERVAL"):
        monkeypatch.delenv(name, raising=False)
    assert dict(channel_options())["grpc.max_receive_message_length"] == 256 * 1024 * 1024
    assert "grpc.keepalive_time_ms" not in dict(channel_options())
    monkeypatch.setenv("CORRAL_GRPC_MAX_MESSAGE_BYTES", "1048576")
    monkeypatch.setenv("CORRAL_GRPC_KEEPALIVE_TIME", "30")
    monkeypatch.setenv("CORRAL_GRPC_KEEPALIVE_TIMEOUT", "5")
    monkeypatch.setenv("CORRAL_GRPC_MIN_PING_INTERVAL", "10")
    options = dict(channel_options())
    assert options["grpc.max_receive_message_length"] == options["grpc.max_send_message_length"] == 1048576
    assert options["grpc.keepalive_time_ms"] == 30000 and options["grpc.keepalive_timeout_ms"] == 5000
    assert options["grpc.http2.min_ping_interval_without_data_ms"] == 10000
    assert config.drain_seconds() == 30.0


def test_message_limit_is_enforced(monkeypatch, store_root):
    """A server started with a 64 KiB limit refuses a bigger request with RESOURCE_EXHAUSTED."""
    import grpc

    from corral.protos.ollama.v1 import ollama_pb2 as pb
    from corral.protos.ollama.v1 import ollama_pb2_grpc as pb_grpc
    from corral.service.server import close_servicer, create_server
    from corral.store.models import ModelStore

    monkeypatch.setenv("CORRAL_GRPC_MAX_MESSAGE_BYTES", str(64 * 1024))
    server, servicer, port = create_server(ModelStore(store_root), "127.0.0.1:0")
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            stub = pb_grpc.OllamaStub(ch)
            assert stub.List(pb.ListRequest()).models == []
            with pytest.raises(grpc.RpcError) as err:
                stub.Show(pb.ShowRequest(model="x" * 100_000))
            assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    finally:
        server.stop(None).wait()
        close_servicer(servicer)
