"""The shim's one gRPC channel and stub, created by the app factory and shared by every request.

Besides the generated stub it has `raw`, whose List and Show leave the response as bytes (the routes
render those bytes to JSON once and answer repeats of the same bytes from a small memo, routes_models.py),
and `Version()`, the service's version remembered while the channel stays connected (a restarted or
upgraded service is a new connection, which forgets it).
"""

import grpc
from flask import current_app

from corral.protos.ollama.v1 import ollama_pb2 as pb
from corral.protos.ollama.v1 import ollama_pb2_grpc as pb_grpc

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


class Client:
    def __init__(self, target: str):
        self.target = target
        self.channel = grpc.insecure_channel(target, options=CHANNEL_OPTIONS)
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
        self.channel.close()


def client() -> Client:
    return current_app.extensions["corral"]


def stub() -> pb_grpc.OllamaStub:
    return current_app.extensions["corral"].stub
