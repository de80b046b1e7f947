"""The gRPC face of the service: the servicer, the status mapping and the protobuf conversions.

Only this package knows protobuf and gRPC; the engine, the registry client, model creation and the store
below it speak dicts and raise corral.store.errors, which api/status.py maps to gRPC codes in one place.
"""
