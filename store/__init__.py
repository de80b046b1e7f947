"""Corral's model store: names, digests, blobs, manifests and GGUF metadata in Ollama's on-disk layout.

Pure Python on purpose: nothing here knows about gRPC, Flask or llama.cpp, so the store can be read and
tested on its own and an existing Ollama models folder can be served as it is.
"""
