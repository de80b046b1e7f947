"""The Ollama REST API as a thin Flask layer over Corral's gRPC service.

It imports only protos, grpc, flask and two pure helper modules of the store (config for the
environment, gocompat for Go durations): whatever the shim can do, any gRPC client can do.
"""
