"""Corral's gRPC service: the servicer, the inference engine and the registry client.

Everything a client can do goes through here; the REST shim is just one more gRPC client.
"""
