"""Builds the gRPC server: the Ollama servicer plus the standard health and reflection services.

`create_server` returns the server and its bound port so tests can bind port 0; `serve` in service/cli/main.py
adds the REST shim and signal handling around it.

Admission: a sync gRPC server runs each call on an executor thread, and calls beyond the executor's threads
wait in its unbounded queue. So the executor has as many threads as the server admits calls
(maximum_concurrent_rpcs, from store.config.Capacity): every admitted call runs at once, and past the
limit gRPC refuses a call at once with RESOURCE_EXHAUSTED "Concurrent RPC limit exceeded!" (which the
REST shim answers as Ollama's 503 "server busy"). The executor starts its threads only as calls need them.
"""

import ctypes
import logging
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from corral.protos.ollama.v1 import ollama_pb2 as pb
from corral.protos.ollama.v1 import ollama_pb2_grpc as pb_grpc
from corral.service import pull_on_demand
from corral.service.api.blob_upload import RawPushBlob
from corral.service.api.inference import Inference
from corral.service.api.servicer import OllamaServicer
from corral.service.api.transfer import Transfer
from corral.service.auth import AuthInterceptor
from corral.service.create import build_creator
from corral.service.drain import Drain, DrainInterceptor
from corral.service.engine.engine import Engine
from corral.service.metrics import MetricsInterceptor, watch_scheduler
from corral.service.observability import RequestContextInterceptor
from corral.service.pull_on_demand import PullOnDemand
from corral.service.reflection import enable_server_reflection
from corral.service.tls import ServerTLS
from corral.store import config
from corral.store.config import Capacity
from corral.store.keys import Keys
from corral.store.models import ModelStore

log = logging.getLogger("corral.service")

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Ollama"].full_name

# Show(verbose) of a large vocabulary and big embedding batches exceed gRPC's 4 MiB default.
MAX_MESSAGE_BYTES = config.DEFAULT_GRPC_MAX_MESSAGE_BYTES


def channel_options(transport: config.GrpcTransport | None = None) -> list[tuple[str, int]]:
    """The server's options: message limits and keepalive from store.config.GrpcTransport (env)."""
    transport = transport or config.GrpcTransport.from_env()
    options = [
        ("grpc.max_receive_message_length", transport.max_message_bytes),
        ("grpc.max_send_message_length", transport.max_message_bytes),
        ("grpc.so_reuseport", 0),  # a second server on a taken port must fail, not share it
        # No BDP probing: it grows each stream's receive window to many MiB, and gRPC then buffers that
        # much of every upload that waits for an upload slot (api/blob_upload.py): 64 concurrent uploads
        # of 16 MiB grew the server by 887 MiB with it, 123 MiB without, at the same upload speed.
        ("grpc.http2.bdp_probe", 0),
    ]
    if transport.keepalive_time:
        options += [("grpc.keepalive_time_ms", int(transport.keepalive_time * 1000)),
                    ("grpc.keepalive_permit_without_calls", 1)]
    if transport.keepalive_timeout:
        options.append(("grpc.keepalive_timeout_ms", int(transport.keepalive_timeout * 1000)))
    if transport.min_ping_interval:
        options += [("grpc.http2.min_ping_interval_without_data_ms", int(transport.min_ping_interval * 1000)),
                    ("grpc.http2.min_recv_ping_interval_without_data_ms", int(transport.min_ping_interval * 1000))]
    return options


# Streams one connection may open past the server's capacity: those few are refused "busy" at once (as
# the REST shim's spare threads answer), the ones after them wait in the client for a stream.
SPARE_STREAMS = 8


def max_streams(transport: config.GrpcTransport, limit: int) -> int:
    """HTTP/2 concurrent streams per connection: CORRAL_GRPC_MAX_STREAMS, else the server's capacity plus
    SPARE_STREAMS. Without a cap (gRPC's default is unbounded) one connection could open any number of
    streams, each one state in gRPC's core before the capacity check refuses it."""
    return transport.max_streams or limit + SPARE_STREAMS


MALLOC_ARENAS = 2
_M_ARENA_MAX = -8  # glibc's mallopt parameter


def limit_malloc_arenas(arenas: int = MALLOC_ARENAS) -> None:
    """Caps glibc's malloc arenas, as MALLOC_ARENA_MAX does (unless that is set).

    glibc gives threads that contend for malloc arenas of their own, up to 8 per core, and keeps freed
    memory in the arena it came from. Uploads pass 1 MiB buffers between threads (a gRPC receiver, the
    hash thread, the writer, the shim's body readers), so peak RSS grew with the number of arenas in use:
    64 concurrent uploads of 16 MiB grew the server by 140 MiB with the default, 70 MiB with two arenas,
    at the same speed. Not glibc (musl, macOS): nothing to do."""
    if config.raw("MALLOC_ARENA_MAX"):
        return
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt(_M_ARENA_MAX, arenas)
    except (OSError, AttributeError):
        log.debug("mallopt unavailable: malloc arenas left as they are")


def build_servicer(store: ModelStore) -> OllamaServicer:
    """The servicer of `corral serve`: one Transfer (whose pull also fetches a missing `from` model for
    create), one Creator and one inference Engine for the store."""
    transfer = Transfer(store)
    creator = build_creator(store, pull=transfer.pull_progress)
    servicer = OllamaServicer(store, creator=creator, inference=Inference(Engine(store)), transfer=transfer)
    if config.pull_on_demand():  # CORRAL_PULL_ON_DEMAND: a missing model is pulled before it is served
        pull_on_demand.install(servicer, PullOnDemand(store, transfer.pull_progress, config.pull_insecure()))
    return servicer


def create_server(store: ModelStore, address: str = "127.0.0.1:50051", max_requests: int | None = None, *,
                  keys: list[str] | None = None, tls: ServerTLS | None = None, drain: Drain | None = None,
                  metrics: bool = True):
    """Returns (server, servicer, port); the server is not started. It runs at most `max_requests` calls
    at once (default: store.config.Capacity) and refuses more at once.

    Every call is counted in the Prometheus metrics (service/metrics.py; `metrics=False` only for the
    benchmark that measures their cost). `keys`: bearer keys every call
    but health must carry (service/auth.py); `tls`: listen with TLS (and mutual TLS with a client CA);
    `drain`: the Drain that `corral serve` begins on SIGTERM (service/drain.py); it gets the health
    servicer. Readiness: health says SERVING from the moment the server starts (the store is open by
    then), until the drain begins."""
    limit = max_requests or Capacity.from_env().requests
    interceptors: list[grpc.ServerInterceptor] = [MetricsInterceptor()] if metrics else []
    interceptors.append(RequestContextInterceptor())  # x-request-id / traceparent into log lines
    if drain is not None:
        interceptors.append(DrainInterceptor(drain))
    if keys:
        interceptors.append(AuthInterceptor(Keys(keys)))
    transport = config.GrpcTransport.from_env()
    options = [*channel_options(transport), ("grpc.max_concurrent_streams", max_streams(transport, limit))]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=limit, thread_name_prefix="grpc"),
                         options=options, maximum_concurrent_rpcs=limit, interceptors=interceptors)
    servicer = build_servicer(store)
    watch_scheduler(servicer.inference.engine.scheduler)
    pb_grpc.add_OllamaServicer_to_server(servicer, RawPushBlob(server))  # PushBlob's data is not copied

    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in ("", SERVICE_NAME):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    if drain is not None:
        drain.health = health_servicer

    enable_server_reflection((SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name), server)
    port = server.add_secure_port(address, tls.grpc_credentials()) if tls else server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"cannot listen on {address}")
    return server, servicer, port


def close_servicer(servicer: OllamaServicer) -> None:
    """Stops the runners and the downloads in flight (their recorded bytes stay for the next pull)."""
    if (on_demand := getattr(servicer, "pull_on_demand", None)) is not None:
        on_demand.close()
    servicer.inference.close()
    servicer.transfer.close()
