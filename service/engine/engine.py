"""The inference engine as the service sees it: names in, vectors and text out, models loaded on demand.

Why this layer: service/inference.py should only translate protobuf, and the scheduler should know
nothing about models. This module joins them: it resolves a name to the store's ModelSpec (with each
endpoint's own error texts), merges options, validates the GGUF before a runner may load it, picks the
scheduler key (model file + adapters, so copies of a model share one runner), runs the request on a
leased runner and measures Ollama's durations. Generate and chat live in textgen.py on top of this.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from corral.service.engine import options as opts_mod
from corral.service.engine.batcher import Batchers, Member
from corral.service.engine.runner import Runner, error_from
from corral.service.engine.runner import warm_up as runner_warm_up
from corral.service.engine.scheduler import Scheduler
from corral.service.engine.validate import check_adapter, check_model
from corral.store.config import EngineConfig, keep_alive_seconds
from corral.store.errors import InvalidArgument, NotFound
from corral.store.names import parse_name

DEFAULT = "default"  # keep_alive not given: the server default applies


def keep_alive_arg(seconds: float | None) -> object:
    """A request's keep_alive (None = unset, negative = forever) as the scheduler wants it."""
    return DEFAULT if seconds is None else keep_alive_seconds(seconds)


def kv_cache_bytes(spec, n_ctx: int) -> int:
    """Ollama-style size estimate of the KV cache (f16 K and V for every layer)."""
    kv = spec.gguf.kv if spec.gguf is not None else {}
    arch = spec.gguf.architecture if spec.gguf is not None else ""
    layers = kv.get(f"{arch}.block_count") or 0
    embd = kv.get(f"{arch}.embedding_length") or 0
    heads = kv.get(f"{arch}.attention.head_count") or 1
    heads_kv = kv.get(f"{arch}.attention.head_count_kv") or heads
    if not all(isinstance(v, int) for v in (layers, embd, heads, heads_kv)) or not heads:
        return 0
    return 2 * 2 * n_ctx * layers * (embd * heads_kv // heads)


def normalize(vectors: np.ndarray, dimensions: int = 0) -> np.ndarray:
    """L2-normalise rows (divided by max(norm, 1e-12)); cut to `dimensions` first, then normalise."""
    if 0 < dimensions < vectors.shape[1]:
        vectors = vectors[:, :dimensions]
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)


class Engine:
    def __init__(self, store, config: EngineConfig | None = None, loader=None):
        self.store = store
        self.config = config or EngineConfig.from_env()
        self.scheduler = Scheduler(
            loader or self._load_runner,
            max_loaded=self.config.max_loaded_models,
            num_parallel=self.config.num_parallel,
            max_queue=self.config.max_queue,
            default_keep_alive=self.config.keep_alive,
            memory_budget=self.config.memory_budget,
        )
        # Concurrent embedding requests for one runner share its batches (batcher.py).
        sched = self.scheduler
        self.batchers = Batchers(max_members=lambda: sched.max_queue,
                                 queue_full=lambda: sched.pending >= sched.max_queue)
        if loader is None:
            threading.Thread(target=runner_warm_up, name="forkserver-warm-up", daemon=True).start()

    def close(self) -> None:
        self.batchers.close()
        self.scheduler.close()

    # -- models ------------------------------------------------------------------------------------

    def spec(self, name: str, missing: str):
        """The ModelSpec for `name`; InvalidArgument for a bad name, NotFound(missing) if absent."""
        if not parse_name(name).is_valid():
            raise InvalidArgument("invalid model name")
        try:
            return self.store.model_spec(name)
        except NotFound:
            raise NotFound(missing) from None

    @staticmethod
    def key(spec) -> str:
        """Runners are shared by every name whose manifest points at the same weights and adapters."""
        return "|".join(str(p) for p in [spec.model_path, *(spec.adapter_paths or [])])

    def options(self, spec, request_options: dict | None) -> dict:
        return opts_mod.merge(spec.params, request_options, self.config.context_length)

    def load_config(self, spec, merged: dict) -> dict:
        """What a runner is loaded with. num_parallel: OLLAMA_NUM_PARALLEL sequences of num_ctx tokens
        each in one context for a completion model; an embedding model always gets 1, as in Ollama."""
        ctx_len = spec.gguf.context_length if spec.gguf is not None else None
        load = opts_mod.load_options(merged, ctx_len, self.config.threads)
        pooled = spec.gguf is not None and spec.gguf.pooling
        load["num_parallel"] = 1 if pooled else self.config.num_parallel
        return load

    def lease(self, spec, merged: dict, keep_alive, cancel=None):
        load = self.load_config(spec, merged)
        def size() -> int:
            files = sum(Path(p).stat().st_size for p in [spec.model_path, *(spec.adapter_paths or [])])
            return files + kv_cache_bytes(spec, load["num_ctx"] * load["num_parallel"])

        meta = {"name": spec.name, "digest": spec.digest, "details": dict(spec.details or {}), "spec": spec}
        return self.scheduler.acquire(self.key(spec), load, meta, keep_alive, size=size, cancel=cancel)

    def _load_runner(self, key: str, load: dict, meta: dict) -> Runner:
        """The scheduler's loader: validate the files, then start a runner child process."""
        spec = meta["spec"]
        info = check_model(spec.model_path, spec.gguf)
        if len(spec.adapter_paths or []) > 1:
            raise InvalidArgument("only one adapter is currently supported")
        for adapter in spec.adapter_paths or []:
            check_adapter(adapter, spec.model_path)
        config = dict(load, model_path=str(spec.model_path), adapters=[str(p) for p in spec.adapter_paths or []],
                      embedding=bool(info.pooling), pack_tokens=self.config.embed_pack_tokens)
        return Runner(config)

    def unload(self, spec) -> None:
        self.scheduler.unload(self.key(spec))

    def running(self) -> list[dict]:
        """ps rows: name, model, size, digest, details, expires_at (epoch s), size_vram, context_length."""
        rows = []
        for row in self.scheduler.running():
            rows.append({
                "name": row["name"], "model": row["name"], "size": row["size"], "digest": row["digest"],
                "details": dict(row["details"], parent_model=""), "expires_at": row["expires_at"],
                "size_vram": 0, "context_length": row["options"].get("num_ctx", 0),
            })
        return rows

    # -- embeddings -------------------------------------------------------------------------------

    def embed_spec(self, name: str, missing: str | None = None):
        """The spec of a model to embed with, with /api/embed's error texts."""
        if not name:
            raise NotFound("model '' not found")
        return self.spec(name, missing or f'model "{name}" not found, try pulling it first')

    def embed_member(self, spec, *, truncate: bool = True, options: dict | None = None,
                     keep_alive: float | None = None) -> Member:
        """A member of the batcher of the runner that serves `spec` with these options (batcher.py):
        add inputs to it, read its chunks, close it."""
        merged = self.options(spec, options)
        load = self.load_config(spec, merged)
        key = (self.key(spec), tuple(sorted(load.items())))

        def acquire(keep, cancel):
            return self.lease(spec, merged, keep, cancel)

        return self.batchers.open(key, acquire, truncate=truncate, keep_alive=keep_alive_arg(keep_alive),
                                  budget=int(load["num_batch"]))

    def embed(self, name: str, inputs: list, *, truncate: bool = True, dimensions: int = 0,
              options: dict | None = None, keep_alive: float | None = None, cancel=None,
              raw: bool = False, missing: str | None = None) -> Iterator[dict]:
        """Yields {"offset", "vectors"} batches in input order, then {"done": True, metrics...}.

        An input is a text or a list of token ids. Vectors are L2-normalised float32 (raw=True: as the
        model produced them, for /api/embeddings).
        The inputs share batches with concurrent requests for the same runner (batcher.py).
        """
        start = time.perf_counter()
        spec = self.embed_spec(name, missing)
        if dimensions < 0:
            raise InvalidArgument("dimensions must be a non-negative number")
        with self.embed_member(spec, truncate=truncate, options=options, keep_alive=keep_alive) as member:
            member.add(inputs)
            member.finish()
            for chunk in member.chunks(cancel):
                if chunk.errors:
                    raise error_from(*chunk.errors[min(chunk.errors)])
                if not np.isfinite(chunk.vectors).all():
                    raise InvalidArgument(NOT_FINITE)
                yield {"offset": chunk.first, "vectors": chunk.vectors if raw else normalize(chunk.vectors, dimensions)}
        yield {
            "done": True,
            "total_duration": int((time.perf_counter() - start) * 1e9),
            "load_duration": int(member.load_seconds * 1e9),
            "prompt_eval_count": member.tokens,
        }

    def embeddings(self, name: str, prompt: str, *, options=None, keep_alive=None, cancel=None) -> list[float]:
        """Legacy /api/embeddings: one raw vector; an empty prompt only loads the model."""
        if not name:
            raise InvalidArgument("model is required")
        vectors = [b["vectors"] for b in self.embed(
            name, [prompt] if prompt else [], options=options, keep_alive=keep_alive, cancel=cancel, raw=True)
            if "vectors" in b]
        return vectors[0][0].astype(np.float64).tolist() if vectors else []

    def embed_stream(self, name: str, *, truncate: bool = True, dimensions: int = 0,
                     options: dict | None = None, keep_alive: float | None = None) -> EmbedStream:
        """An open stream of inputs for the EmbedStream rpc (see EmbedStream)."""
        start = time.perf_counter()
        spec = self.embed_spec(name)
        if dimensions < 0:
            raise InvalidArgument("dimensions must be a non-negative number")
        member = self.embed_member(spec, truncate=truncate, options=options, keep_alive=keep_alive)
        return EmbedStream(member, dimensions, start)


NOT_FINITE = "embedding contains NaN or Inf values"


class EmbedStream:
    """Inputs added over time, results as they are computed: the engine side of the EmbedStream rpc.

    One batcher member for the whole stream, so the model is leased (and loaded) once. A bad input
    (too long with truncate=false, a NaN/Inf vector) is reported in its result; the stream goes on.
    """

    def __init__(self, member: Member, dimensions: int, start: float):
        self.member = member
        self.dimensions = dimensions
        self.start = start

    def add(self, texts: list[str]) -> int:
        """Queues texts; returns the stream index of the first."""
        return self.member.add(texts)

    def finish(self) -> None:
        """No more texts: results() ends once every text is answered."""
        self.member.finish()

    def fail(self, exc: BaseException) -> None:
        """Ends the stream with this error (raised by results())."""
        self.member.fail(exc)

    def results(self, cancel=None) -> Iterator[dict]:
        """Yields {"first": index, "vectors": (n, d) normalised, "errors": {row: text}} in input order,
        then {"done": True, metrics...}. Rows with an error hold zeros."""
        for chunk in self.member.chunks(cancel):
            errors = {row: text for row, (_, text) in chunk.errors.items()}
            finite = np.isfinite(chunk.vectors).all(axis=1)
            if not finite.all():
                for row in np.flatnonzero(~finite).tolist():
                    errors.setdefault(row, NOT_FINITE)
                chunk.vectors[~finite] = 0
            yield {"first": chunk.first, "vectors": normalize(chunk.vectors, self.dimensions), "errors": errors}
        yield {
            "done": True,
            "total_duration": int((time.perf_counter() - self.start) * 1e9),
            "load_duration": int(self.member.load_seconds * 1e9),
            "prompt_eval_count": self.member.tokens,
        }

    def close(self) -> None:
        self.member.close()
