"""The Ollama REST API as a thin Flask layer over Corral's gRPC service.

It imports only protos, grpc and flask: whatever the shim can do, any gRPC client can do.
"""
