"""Corral's gRPC service: everything that is neither storage (store/) nor HTTP (rest_shim/).

    api/        the gRPC servicer, error -> status mapping, the protobuf <-> dict conversions
    create/     model creation: from a model, GGUF files, safetensors, adapters, quantize, auto-pull
    engine/     inference: runner child processes (llama-cpp-python), scheduler, options, generate/chat
    prompt/     Go text/template port, Ollama's template rules, Jinja chat templates, capabilities
    convert/    safetensors -> GGUF, quantization (child process), adapter validation
    registry/   OCI registry client: pull, push, auth, resumable verified downloads
    cli/        the `corral` command
    server.py   builds the gRPC server and wires the parts together, once
    show.py     /api/show: the store's description plus the capabilities judged here

Everything a client can do goes through here; the REST shim is just one more gRPC client.
"""
