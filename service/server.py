"""Builds the gRPC server: the Ollama servicer plus the standard health and reflection services.

`create_server` returns the server and its bound port so tests can bind port 0; `serve` in service/cli.py
adds the REST shim and signal handling around it.
"""

import logging
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from corral.protos.ollama.v1 import ollama_pb2 as pb
from corral.protos.ollama.v1 import ollama_pb2_grpc as pb_grpc
from corral.service.api.servicer import OllamaServicer
from corral.store.errors import InvalidArgument
from corral.store.models import ModelStore

log = logging.getLogger("corral.service")

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Ollama"].full_name

# Show(verbose) of a large vocabulary and big embedding batches exceed gRPC's 4 MiB default.
MAX_MESSAGE_BYTES = 256 * 1024 * 1024
CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
]


def _optional(factory, store):
    """Inference and transfers are optional parts: without them their RPCs answer UNIMPLEMENTED."""
    try:
        return factory(store)
    except ImportError:
        log.warning("%s unavailable", factory.__name__, exc_info=True)
        return None


def _validate_template(text: str) -> None:
    from corral.service.prompt.templates import TemplateError, parse

    try:
        parse(text)
    except TemplateError as exc:
        raise InvalidArgument(f"template error: {exc}") from None


def _quantize_hook(store: ModelStore):
    from corral.service.convert.quantize import quantize

    def hook(source, type_name):
        """Quantizes into a temp file inside blobs/, so the result is renamed into place, not copied."""
        out = store.paths.temp_blob()
        try:
            yield from quantize(source, out, type_name)
        except BaseException:
            out.unlink(missing_ok=True)
            raise
        return out

    return hook


def install_store_hooks(store: ModelStore) -> None:
    """The store stays free of service code (llama.cpp, converters); the service lends it what create
    needs: template parsing, quantization in a child process, safetensors conversion, adapter checks."""
    from corral.service.convert.adapters import validate_adapter
    from corral.service.convert import convert
    from corral.service.convert.quantize import normalize_type

    store.validate_template = _validate_template
    store.normalize_quant_type = normalize_type
    store.quantize_hook = _quantize_hook(store)
    store.convert_hook = convert
    store.validate_adapter = validate_adapter


def build_servicer(store: ModelStore) -> OllamaServicer:
    from corral.service.api.inference import Inference
    from corral.service.api.transfer import Transfer

    install_store_hooks(store)
    return OllamaServicer(store, inference=_optional(Inference, store), transfer=_optional(Transfer, store))


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


def close_servicer(servicer: OllamaServicer):
    for part in (servicer.inference, servicer.transfer):
        if part is not None and hasattr(part, "close"):
            part.close()
