"""gRPC server reflection as `grpc.reflection.v1` and `grpc.reflection.v1alpha`.

Why both: grpcurl, Postman and newer gRPC tooling ask for v1 first and fall back to v1alpha (which older
tools only know). grpcio-reflection 1.85 ships only v1alpha. The two protocols are the same messages
under another package name (every field number and type is equal), so v1 is served by the same servicer
with the v1alpha message classes, and its descriptor, v1alpha's file renamed, is added to the default
pool so reflection can describe the v1 service itself.
"""

from __future__ import annotations

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection
from grpc_reflection.v1alpha import reflection_pb2 as v1alpha_pb2

V1_PACKAGE = "grpc.reflection.v1"
V1_FILE = "grpc/reflection/v1/reflection.proto"
V1_SERVICE_NAME = f"{V1_PACKAGE}.ServerReflection"
V1ALPHA_SERVICE_NAME = reflection.SERVICE_NAME


def _v1_file() -> descriptor_pb2.FileDescriptorProto:
    """v1alpha's reflection.proto with its package (and every type reference) renamed to v1."""
    old = "." + v1alpha_pb2.DESCRIPTOR.package + "."
    proto = descriptor_pb2.FileDescriptorProto()
    v1alpha_pb2.DESCRIPTOR.CopyToProto(proto)
    proto.name, proto.package = V1_FILE, V1_PACKAGE
    proto.ClearField("options")

    def rename(messages) -> None:
        for message in messages:
            for f in message.field:
                if f.type_name.startswith(old):
                    f.type_name = f".{V1_PACKAGE}." + f.type_name[len(old):]
            rename(message.nested_type)

    rename(proto.message_type)
    for service in proto.service:
        for method in service.method:
            method.input_type = f".{V1_PACKAGE}." + method.input_type[len(old):]
            method.output_type = f".{V1_PACKAGE}." + method.output_type[len(old):]
    return proto


def register_v1_descriptor(pool: descriptor_pool.DescriptorPool | None = None) -> None:
    """Adds the v1 reflection file to the pool (once)."""
    pool = pool or descriptor_pool.Default()
    try:
        pool.FindFileByName(V1_FILE)
    except KeyError:
        pool.Add(_v1_file())


def enable_server_reflection(service_names, server: grpc.Server) -> None:
    """Serves reflection for `service_names` (plus both reflection services) as v1 and v1alpha."""
    register_v1_descriptor()
    names = (*service_names, V1_SERVICE_NAME, V1ALPHA_SERVICE_NAME)
    reflection.enable_server_reflection(names, server)
    servicer = reflection.ReflectionServicer(names)
    handler = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=v1alpha_pb2.ServerReflectionRequest.FromString,
        response_serializer=v1alpha_pb2.ServerReflectionResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(V1_SERVICE_NAME, {"ServerReflectionInfo": handler}),))
