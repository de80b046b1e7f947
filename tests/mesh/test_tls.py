"""TLS and mutual TLS on a real `corral serve`, with certificates the test makes: gRPC and REST over TLS,
a gRPC client without a client certificate (or with one the CA never signed) refused under mTLS, and a
shim-only serve reaching the mTLS server with its own certificate and key. Bad files stop serve at once."""

import subprocess

import grpc
import pytest
import requests

from corral.protos.ollama.v1 import ollama_pb2 as pb
from corral.protos.ollama.v1 import ollama_pb2_grpc as pb_grpc
from tests.mesh.certs import make_certs
from tests.mesh.conftest import EXE, channel, make_model

KEY = "tls-key-1"


def tls_args(certs, mutual: bool) -> list[str]:
    args = ["--tls-cert", str(certs.server_cert), "--tls-key", str(certs.server_key)]
    return [*args, "--tls-client-ca", str(certs.ca)] if mutual else args


def list_models(target, credentials, metadata=None, timeout=5):
    with channel(target, credentials) as ch:
        return [m.name for m in pb_grpc.OllamaStub(ch).List(pb.ListRequest(), metadata=metadata,
                                                             timeout=timeout).models]


def test_tls_for_grpc_and_rest(serve_factory, tmp_path):
    certs = make_certs(tmp_path / "certs")
    server = serve_factory(*tls_args(certs, mutual=False))
    assert server.url.startswith("https://")
    creds = grpc.ssl_channel_credentials(certs.read("ca"))
    with channel(server.target, creds) as ch:
        make_model(pb_grpc.OllamaStub(ch), tmp_path)
    assert list_models(server.target, creds) == ["tiny:latest"]
    with pytest.raises(grpc.RpcError):  # plain text to a TLS port
        list_models(server.target, None, timeout=2)
    # REST over HTTPS; the shim reaches its own gRPC server over a private Unix socket
    reply = requests.get(server.url + "/api/tags", verify=str(certs.ca))
    assert [m["name"] for m in reply.json()["models"]] == ["tiny:latest"]
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(server.url + "/api/tags")  # not signed by a CA the client trusts
    final = requests.post(server.url + "/api/generate", verify=str(certs.ca), json={
        "model": "tiny", "prompt": "hi", "stream": False, "options": {"num_predict": 2}}).json()
    assert final["eval_count"] == 2


def test_mutual_tls_and_a_shim_in_front(serve_factory, tmp_path):
    certs = make_certs(tmp_path / "certs")
    server = serve_factory(*tls_args(certs, mutual=True), env={"CORRAL_API_KEYS": KEY})
    good = grpc.ssl_channel_credentials(certs.read("ca"), certs.read("client_key"), certs.read("client_cert"))
    assert list_models(server.target, good, [("authorization", f"Bearer {KEY}")]) == []
    with pytest.raises(grpc.RpcError) as err:  # a valid certificate still needs the key
        list_models(server.target, good)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    for refused in (grpc.ssl_channel_credentials(certs.read("ca")),  # no client certificate
                    grpc.ssl_channel_credentials(certs.read("ca"), certs.read("rogue_key"), certs.read("rogue_cert"))):
        with pytest.raises(grpc.RpcError) as err:
            list_models(server.target, refused, [("authorization", f"Bearer {KEY}")], timeout=3)
        assert err.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)

    # a shim-only serve in front of it: TLS with the CA, its own certificate, and its own key for callers
    shim = serve_factory("--no-grpc", "--grpc-target", f"localhost:{server.grpc_port}", "--grpc-ca", str(certs.ca),
                         "--grpc-client-cert", str(certs.client_cert), "--grpc-client-key", str(certs.client_key),
                         env={"CORRAL_API_KEY": KEY}, folder="shim")
    assert requests.get(shim.url + "/api/tags").json() == {"models": []}
    # a caller's own (wrong) key is forwarded instead of the shim's
    reply = requests.get(shim.url + "/api/tags", headers={"Authorization": "Bearer wrong"})
    assert reply.status_code == 401 and reply.json() == {"error": "unauthorized"}


@pytest.mark.parametrize("args, message", [
    (["--tls-cert", "/nonexistent/cert.pem", "--tls-key", "/nonexistent/key.pem"],
     "certificate '/nonexistent/cert.pem': No such file or directory"),
    (["--tls-cert", "CERT"], "TLS needs both --tls-cert and --tls-key"),
    (["--tls-cert", "CERT", "--tls-key", "CERT"], "holds no private key"),
])
def test_bad_tls_options_stop_serve(tmp_path, args, message):
    certs = make_certs(tmp_path / "certs")
    args = [str(certs.server_cert) if a == "CERT" else a for a in args]
    proc = subprocess.run([EXE, "serve", "--grpc-address", "127.0.0.1:0", "--http-address", "127.0.0.1:0", *args],
                          capture_output=True, text=True, timeout=60, env={"OLLAMA_MODELS": str(tmp_path / "m"),
                                                                          "HOME": str(tmp_path), "PATH": "/usr/bin"})
    assert proc.returncode == 2 and message in proc.stderr
