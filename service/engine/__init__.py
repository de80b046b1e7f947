"""Corral's inference engine: llama-cpp-python models in runner child processes, behind a scheduler.

Why a package of small modules: each concern has its own reasons and its own tests, and only two of
them ever import llama_cpp (and only inside a runner child process, where a crash cannot take the
server down).

    config.py      server-wide settings from OLLAMA_* variables (keep-alive, max loaded, parallel, queue)
    options.py     Ollama's option defaults, params layer <- request options, load vs. sampling options
    validate.py    GGUF checks before llama.cpp may load a file (header, data bounds, adapters)
    runner.py      parent side of a runner process: spawn (forkserver), request/cancel protocol, deaths
    worker.py      child side: owns llama_cpp.Llama, runs the decode loop and embeddings, honours cancels
    embedding.py   (child) tokenize, truncate, pack a few inputs per decode, raw vectors in order
    batcher.py     (parent) dynamic batching: concurrent embedding requests share the runner's batches
    generation.py  (child) num_parallel requests in one batch per step: per-request samplers, stop
                   strings, num_predict, grammars, metrics, context
    scheduler.py   which runners are loaded: keep_alive, LRU eviction, parallel slots, bounded queue
    prompts.py     request -> prompt text: Go template layer, GGUF Jinja template, system, messages
    engine.py      names -> specs -> leases; embed, embeddings, embed streams and ps
    textgen.py     generate and chat: Ollama's checks, load/unload shortcuts, streaming

service/inference.py translates protobuf to and from this package; rest_shim/routes_inference.py
translates Ollama JSON to and from protobuf.
"""

from corral.service.engine.engine import Engine

__all__ = ["Engine"]
