"""The shim's one gRPC channel and stub, created by the app factory and shared by every request.

Besides the generated stub it has `raw`, whose List and Show leave the response as bytes (the routes
render those bytes to JSON once and answer repeats of the same bytes from a small memo, routes_models.py),
and `Version()`, the service's version remembered while the channel stays connected (a restarted or
upgraded service is a new connection, which forgets it).
"""

from typing import Any

import grpc
from flask import current_app, has_request_context, request

from corral.protos.ollama.v1 import ollama_pb2 as pb
from corral.protos.ollama.v1 import ollama_pb2_grpc as pb_grpc
from corral.rest_shim.tracing import outgoing_metadata
from corral.service.call_metadata import MetadataInterceptor
from corral.store.names import parse_name

MAX_MESSAGE_BYTES = 256 * 1024 * 1024
CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.enable_http_proxy", 0),  # the service is reached directly, never through an HTTP proxy
    # Every call is new work from an HTTP client, which retries itself; transparent retries would buffer
    # each request message (a 1 MiB blob chunk) for a replay that never comes.
    ("grpc.enable_retries", 0),
]


class RawStub:
    """Calls whose responses (List, Show) or requests (PushBlob) stay serialized bytes."""

    def __init__(self, channel: grpc.Channel):
        self.List = channel.unary_unary(
            "/ollama.v1.Ollama/List", request_serializer=pb.ListRequest.SerializeToString,
            response_deserializer=None, _registered_method=True)
        self.Show = channel.unary_unary(
            "/ollama.v1.Ollama/Show", request_serializer=pb.ShowRequest.SerializeToString,
            response_deserializer=None, _registered_method=True)
        self.PushBlob = channel.stream_unary(
            "/ollama.v1.Ollama/PushBlob", request_serializer=None,
            response_deserializer=pb.PushBlobResponse.FromString, _registered_method=True)


def model_header(message: Any) -> str:
    """The `x-ollama-model` value for a request message: its model name in the short form /api/tags shows
    (`tiny` and `tiny:latest` hash alike at the proxy), "" when it names none or no valid one."""
    text = getattr(message, "model", "")
    if not text or not isinstance(text, str):
        return ""
    name = parse_name(text)
    return name.display if name.is_valid() else ""


class ForwardAuthorization(MetadataInterceptor):
    """Call metadata from the REST request: with `forward_auth`, the caller's `Authorization` header (else
    `fallback`, the shim's own key) as `authorization`, so a service that checks keys sees the caller's;
    always `x-ollama-model` on a call whose request names a model, what a proxy in front of several
    replicas hashes on (deploy/nginx/corral.conf); and the REST request's `x-request-id` and `traceparent`."""

    def __init__(self, fallback: str = "", forward_auth: bool = True):
        self.fallback = f"Bearer {fallback}" if fallback else ""
        self.forward_auth = forward_auth

    def entries(self, message: Any) -> list[tuple[str, str]]:
        metadata = []
        if self.forward_auth:
            header = request.headers.get("Authorization") if has_request_context() else None
            header = header or self.fallback
            if header:
                metadata.append(("authorization", header))
        if message is not None and (model := model_header(message)):
            metadata.append(("x-ollama-model", model))
        metadata += outgoing_metadata()  # x-request-id, traceparent (rest_shim/tracing.py)
        return metadata


def channel_credentials(ca: str = "", cert: str = "", key: str = "") -> grpc.ChannelCredentials:
    """TLS to the service: `ca` verifies it (else the system's roots); `cert` and `key` are the shim's own
    identity for mutual TLS. A file that cannot be read raises ValueError naming it."""
    def read(path: str, what: str) -> bytes | None:
        if not path:
            return None
        try:
            with open(path, "rb") as f:
                return f.read()
        except OSError as exc:
            raise ValueError(f"{what} {path!r}: {exc.strerror or exc}") from None

    if bool(cert) != bool(key):
        raise ValueError("a client certificate needs its key, and a key its certificate")
    return grpc.ssl_channel_credentials(read(ca, "CA file"), read(key, "client key"), read(cert, "client certificate"))


class Client:
    def __init__(self, target: str, credentials: grpc.ChannelCredentials | None = None,
                 forward_auth: bool = False, fallback_key: str = ""):
        """`credentials`: TLS to the service; `forward_auth`: pass each caller's Authorization header (else
        `fallback_key`) on as gRPC metadata. Every call that names a model carries `x-ollama-model`."""
        self.target = target
        if credentials is not None:
            self.channel = grpc.secure_channel(target, credentials, options=CHANNEL_OPTIONS)
        else:
            self.channel = grpc.insecure_channel(target, options=CHANNEL_OPTIONS)
        self._plain = self.channel
        self.channel = grpc.intercept_channel(self.channel, ForwardAuthorization(fallback_key, forward_auth))
        self.stub = pb_grpc.OllamaStub(self.channel)
        self.raw = RawStub(self.channel)
        self._version: str | None = None
        self._connections = 0  # counts connectivity changes, so a version asked across one is not kept
        self.channel.subscribe(self._connectivity, try_to_connect=False)

    def _connectivity(self, state: grpc.ChannelConnectivity) -> None:
        self._connections += 1
        if state != grpc.ChannelConnectivity.READY:
            self._version = None

    def Version(self) -> str:
        """The service's version; asked once per connection (Ollama clients poll /api/version)."""
        version = self._version
        if version is None:
            before = self._connections
            version = self.stub.Version(pb.VersionRequest()).version
            if self._connections == before:
                self._version = version
        return version

    def close(self):
        self.channel.unsubscribe(self._connectivity)
        self._plain.close()


def client() -> Client:
    return current_app.extensions["corral"]


def stub() -> pb_grpc.OllamaStub:
    return current_app.extensions["corral"].stub
