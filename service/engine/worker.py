"""The code that runs inside a runner child process: it owns one llama_cpp.Llama and serves requests.

Why it is separate from runner.py: this module is the only one that touches llama.cpp, and it runs in a
process that may die (abort, segfault) without harming the server. It is imported by the forkserver at
startup (preloading llama_cpp) so that each runner starts quickly.

Loop: a reader thread receives messages (new requests go to a queue; "cancel" marks a request so the
embedding or generation loop stops it at its next batch or step, and tokenizing stops at its next piece;
"close" or a closed pipe ends the process, stopping the job in progress at its next such check). The
main thread owns llama.cpp: it takes new requests from the queue and, while generate requests run,
performs one decode step of generation.py's Generator after another, which serves up to
num_parallel generate requests together (one sequence each in one llama.cpp context). Embedding requests
run whole, one at a time, between two steps (on a completion model they reuse the generation context,
after which the running generations evaluate their tokens again). Every reply is a tuple described in
runner.py.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import os
import queue
import signal
import sys
import threading
import traceback
from collections.abc import Callable
from typing import Any

from corral.store import config as settings

llama_cpp: Any = None  # imported in the child only (runner.py preloads it into the forkserver), so the
# server process that merely references main() never loads libllama.


class RequestError(Exception):
    """An error for one request, carrying a store.errors code name and Ollama's text."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


class _LogCapture:
    """Keeps llama.cpp's last log lines (for error texts) and passes errors through to stderr."""

    def __init__(self):
        self.lines = collections.deque(maxlen=20)
        self._callback = llama_cpp.llama_log_callback(self._log)  # keep a reference: C holds the pointer
        llama_cpp.llama_log_set(self._callback, ctypes.c_void_p(0))

    def _log(self, level, text, user_data):
        line = text.decode("utf-8", "replace")
        self.lines.append(line)
        if level == 4 and not settings.runner_quiet():  # GGML_LOG_LEVEL_ERROR
            sys.stderr.write(line)

    def last_error(self) -> str:
        """The most telling recent line: llama.cpp's own 'error loading model: ...' when present."""
        lines = [line.strip() for line in self.lines]
        for line in reversed(lines):
            if "error loading model:" in line:
                return line.split("error loading model:", 1)[1].strip()
        for line in reversed(lines):
            if "error" in line.lower() or "failed" in line.lower():
                return line
        return ""


@contextlib.contextmanager
def _context_params(**fields):
    """Sets context parameters that llama_cpp.Llama() has no argument for (n_seq_max, kv_unified,
    flash_attn_type = auto) on the context it creates inside this block."""
    module = llama_cpp.llama_cpp
    original = module.llama_init_from_model

    def init_from_model(model, params):
        for key, value in fields.items():
            setattr(params, key, value)
        return original(model, params)

    module.llama_init_from_model = init_from_model
    try:
        yield
    finally:
        module.llama_init_from_model = original


class Model:
    """One loaded model: a Llama object plus the embedding and generation helpers around it."""

    def __init__(self, config: dict, logs: _LogCapture, reply):
        from corral.service.engine.embedding import Embedder
        from corral.service.engine.generation import Generator
        from corral.service.engine.tokenizer import Tokenizer

        self.config = config
        n_ctx = int(config["num_ctx"])
        embedding = bool(config.get("embedding"))
        # num_batch (default 512, at most num_ctx) as Ollama does. An encoder sees each input whole in one
        # batch, so num_batch is also its longest input (Ollama cuts inputs to num_batch too); making it
        # n_ctx instead would reserve an n_ctx^2 attention buffer per head (GBs for 8k-context encoders).
        n_batch = int(config["num_batch"])
        # A completion model serves num_parallel requests at once, num_ctx tokens each, in one context of
        # num_parallel sequences sharing a KV cache of num_parallel * num_ctx cells, as Ollama loads it.
        # Flash attention (llama.cpp's automatic choice) skips the other sequences' cells of that cache.
        # Unified, because llama.cpp's per-sequence KV streams (kv_unified=False) split a mixed batch into
        # many small ones: measured 66 ms instead of 3.1 ms per step of four sequences here.
        # An encoder gets flash attention too: it lets the embedder pack many inputs per decode (the
        # masked attention over a packed batch is what made packing slow; embedding.py has the figures).
        self.n_parallel = 1 if embedding else max(1, int(config.get("num_parallel", 1)))
        params: dict = {"flash_attn_type": llama_cpp.LLAMA_FLASH_ATTN_TYPE_AUTO}
        if not embedding:
            params.update(n_seq_max=self.n_parallel, kv_unified=True)
        adapters = list(config.get("adapters") or [])
        try:
            with _context_params(**params):
                self.llama = llama_cpp.Llama(
                    model_path=str(config["model_path"]),
                    n_ctx=n_ctx * self.n_parallel,
                    n_batch=n_batch,
                    n_ubatch=n_batch,
                    n_threads=int(config["num_thread"]),
                    n_threads_batch=int(config["num_thread"]),
                    use_mmap=bool(config.get("use_mmap", True)),
                    embedding=embedding,
                    lora_path=str(adapters[0]) if adapters else None,
                    verbose=False,
                )
        except Exception as exc:
            detail = logs.last_error() or str(exc)
            raise RuntimeError(f"error loading model: {detail}") from None
        self.n_ctx = n_ctx
        self.embedding = embedding
        limit = n_batch if embedding else n_ctx  # a causal model embeds long inputs in several batches
        self.tokenizer = Tokenizer(self.llama)
        self.embedder = Embedder(self.llama, limit, embedding, int(config.get("pack_tokens", 32)), self.tokenizer)
        self.generator = None if embedding else Generator(self.llama, n_ctx, reply, self.n_parallel, self.tokenizer)
        self.warm_up()

    def warm_up(self) -> None:
        """One tiny decode now, so the first request does not pay llama.cpp's first-decode setup
        (measured ~0.3 s here) inside its prompt time; Ollama's runners warm up the same way."""
        if self.embedding:
            self.embedder.run({"inputs": [""]}, lambda item: None, lambda: False)
        else:
            self.llama.eval([self.llama.token_bos() if self.llama.token_bos() >= 0 else 0])
            self.llama.reset()
            self.llama._ctx.kv_cache_clear()

    def info(self) -> dict:
        return {
            "pid": os.getpid(),
            "n_ctx": self.n_ctx,
            "num_parallel": self.n_parallel,
            "n_embd": self.llama.n_embd(),
            "embedding": self.embedding,
            "model_bytes": int(llama_cpp.llama_model_size(self.llama.model)),
        }

    def handle(self, kind: str, payload: dict, emit, cancelled) -> dict:
        """A request served whole, now (embeddings); generate requests go to the generator instead."""
        if kind == "embed":
            try:
                return self.embedder.run(payload, emit, cancelled)
            finally:
                if self.generator is not None:  # the embedder used (and cleared) the generation context
                    self.generator.reset_cache()
        if kind == "tokenize":
            # {"texts", "add_bos", "limit"} -> {"counts"}: chat truncation measures its candidates against
            # the context; past `limit` a count only says "more" (at least limit + 1), and costs no more.
            add_bos = bool(payload.get("add_bos", True))
            limit = payload.get("limit")
            return {"counts": [len(self.tokenizer.tokenize(t, add_bos, True, limit=limit, cancelled=cancelled))
                               for t in payload.get("texts") or []]}
        if kind == "generate":
            raise RequestError("INVALID_ARGUMENT", "model does not support generate")
        raise RequestError("INVALID_ARGUMENT", f"unknown request {kind!r}")


def main(conn, config: dict) -> None:
    """Child entry point: load, say ready, then serve until told to close or the parent goes away."""
    global llama_cpp
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when runners stop
    settings.runner_library_defaults()
    try:
        import llama_cpp
    except Exception as exc:
        conn.send(("load_error", f"llama_cpp is not available: {exc}"))
        return
    send_lock = threading.Lock()

    def send(message):
        with send_lock:
            conn.send(message)

    logs = _LogCapture()
    try:
        model = Model(config, logs, send)
    except Exception as exc:
        conn.send(("load_error", str(exc)))
        return
    conn.send(("ready", model.info()))

    jobs: queue.SimpleQueue = queue.SimpleQueue()
    cancelled: set[int] = set()
    closing = threading.Event()  # "close" or the parent gone: the job in progress stops too

    def read():
        try:
            while True:
                message = conn.recv()
                if message[0] == "cancel":
                    cancelled.add(message[1])
                    jobs.put(_WAKE)
                elif message[0] == "close":
                    break
                else:
                    jobs.put(message)
        except (EOFError, OSError):
            pass
        closing.set()
        jobs.put(None)

    threading.Thread(target=read, name="runner-read", daemon=True).start()
    generator = model.generator
    try:
        while True:
            busy = generator is not None and generator.busy
            try:
                job = jobs.get_nowait() if busy else jobs.get()
            except queue.Empty:
                job = _WAKE
            if job is None:
                break
            if job is not _WAKE:
                serve(model, job, lambda _id: _id in cancelled or closing.is_set(), cancelled, send)
                continue  # take every queued message before the next step
            if generator is None:
                continue
            if cancelled:
                gone = set(cancelled)
                cancelled.difference_update(gone)
                generator.cancel(gone)
            try:
                generator.step()
            except (BrokenPipeError, EOFError, OSError):
                raise
            except Exception as exc:
                traceback.print_exc()
                generator.fail_all("INTERNAL", str(exc) or exc.__class__.__name__)
    except (BrokenPipeError, EOFError, OSError):
        pass
    try:
        conn.close()
    finally:
        os._exit(0)  # skip interpreter teardown: llama.cpp's destructors are slow and sometimes crash


_WAKE = ("wake",)  # a queue entry that only wakes the main loop (a cancel arrived)


def serve(model: Model, job: tuple, stopped: Callable[[int], bool], cancelled: set[int], send) -> None:
    """Starts a generate request on the generator (tokenizing its prompt), or runs any other request to its
    end. stopped(req_id): the request was cancelled or the runner is closing; long steps (tokenizing a
    huge text, embedding chunks) check it, so a cancel or close stops them within a bounded time."""
    kind, req_id, payload = job

    def gone() -> bool:
        return stopped(req_id)

    try:
        if gone():
            raise RequestError("CANCELLED", "request canceled")
        if kind == "generate" and model.generator is not None:
            model.generator.submit(req_id, payload, gone)
            return
        result = model.handle(kind, payload, lambda item: send(("item", req_id, item)), gone)
        send(("done", req_id, result))
    except RequestError as exc:
        send(("error", req_id, exc.code, exc.message))
    except (BrokenPipeError, EOFError, OSError):
        raise
    except Exception as exc:
        traceback.print_exc()
        send(("error", req_id, "INTERNAL", str(exc) or exc.__class__.__name__))
    finally:
        if kind != "generate" or model.generator is None:
            cancelled.discard(req_id)
