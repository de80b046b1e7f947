"""Builds the gRPC server: the Ollama servicer plus the standard health and reflection services.

`create_server` returns the server and its bound port so tests can bind port 0; `serve` in service/cli/main.py
adds the REST shim and signal handling around it.
"""

from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from corral.protos.ollama.v1 import ollama_pb2 as pb
from corral.protos.ollama.v1 import ollama_pb2_grpc as pb_grpc
from corral.service.api.inference import Inference
from corral.service.api.servicer import OllamaServicer
from corral.service.api.transfer import Transfer
from corral.service.create import build_creator
from corral.service.engine.engine import Engine
from corral.store.models import ModelStore

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Ollama"].full_name

# Show(verbose) of a large vocabulary and big embedding batches exceed gRPC's 4 MiB default.
MAX_MESSAGE_BYTES = 256 * 1024 * 1024
CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
]


def build_servicer(store: ModelStore) -> OllamaServicer:
    """The servicer of `corral serve`: one Transfer (whose pull also fetches a missing `from` model for
    create), one Creator and one inference Engine for the store."""
    transfer = Transfer(store)
    creator = build_creator(store, pull=transfer.pull_progress)
    return OllamaServicer(store, creator=creator, inference=Inference(Engine(store)), transfer=transfer)


def create_server(store: ModelStore, address: str = "127.0.0.1:50051", max_workers: int = 64):
    """Returns (server, servicer, port); the server is not started."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers), options=CHANNEL_OPTIONS)
    servicer = build_servicer(store)
    pb_grpc.add_OllamaServicer_to_server(servicer, server)

    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in ("", SERVICE_NAME):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)

    reflection.enable_server_reflection(
        (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
        server,
    )
    port = server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"cannot listen on {address}")
    return server, servicer, port


def close_servicer(servicer: OllamaServicer) -> None:
    """Stops the runners and the downloads in flight (their recorded bytes stay for the next pull)."""
    servicer.inference.close()
    servicer.transfer.close()
