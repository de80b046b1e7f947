"""The shim's one gRPC channel and stub, created by the app factory and shared by every request."""

import grpc
from flask import current_app

from corral.protos.ollama.v1 import ollama_pb2_grpc as pb_grpc

MAX_MESSAGE_BYTES = 256 * 1024 * 1024
CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.enable_http_proxy", 0),  # the service is reached directly, never through an HTTP proxy
]


class Client:
    def __init__(self, target: str):
        self.target = target
        self.channel = grpc.insecure_channel(target, options=CHANNEL_OPTIONS)
        self.stub = pb_grpc.OllamaStub(self.channel)

    def close(self):
        self.channel.close()


def stub() -> pb_grpc.OllamaStub:
    return current_app.extensions["corral"].stub
