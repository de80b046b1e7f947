"""Generate and chat on top of the Engine: Ollama's request checks, load/unload shortcuts, prompt, stream.

Why separate from engine.py: the two endpoints share a long list of Ollama rules (error texts that
differ between generate and chat, the empty-prompt load and keep_alive-0 unload replies, capability
checks for completion, insert, thinking and tools, raw mode, format validation) that would drown the
engine's core. Each function yields plain dicts: {"response"|"content": piece, "done": False} while
streaming, then one {"done": True, "done_reason", metrics...}; service/api/inference.py makes protobuf.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Iterator

from corral.service.engine.engine import Engine, keep_alive_arg
from corral.service.engine.options import sampling_options
from corral.service.engine.output import Output, default_think, logprob_fields, template_of, template_think
from corral.service.prompt import prompts
from corral.service.prompt.capabilities import model_capabilities
from corral.service.prompt.truncate import fit_messages
from corral.store.errors import InvalidArgument, NotFound
from corral.store.names import parse_name

THINK_OFF = ("", "false")


def check_format(fmt: str) -> str:
    if not fmt or fmt == "json":
        return fmt
    try:
        schema = json.loads(fmt)
    except ValueError:
        schema = None
    if not isinstance(schema, dict):
        raise InvalidArgument('invalid format: expected "json" or a valid JSON schema')
    return json.dumps(schema)


def _check_common(req: dict) -> None:
    top = int(req.get("top_logprobs") or 0)
    if top < 0 or top > 20:
        raise InvalidArgument("top_logprobs must be between 0 and 20")


def _metrics(start: float, load: float, final: dict) -> dict:
    return {
        "total_duration": int((time.perf_counter() - start) * 1e9),
        "load_duration": int(load * 1e9),
        "prompt_eval_count": final.get("prompt_eval_count", 0),
        "prompt_eval_duration": final.get("prompt_eval_duration", 0),
        "eval_count": final.get("eval_count", 0),
        "eval_duration": final.get("eval_duration", 0),
    }


def _stream(engine: Engine, spec, merged: dict, keep, payload: dict, cancel, key: str, start: float,
            prepare=None) -> Iterator[dict]:
    """prepare(runner, payload, cancel), when given, completes the payload on the leased runner (chat
    truncation)."""
    payload["options"] = sampling_options(merged)
    asked = time.perf_counter()
    with engine.lease(spec, merged, keep, cancel) as lease:
        # load_duration is the scheduling step (waiting for, and maybe loading, the runner), as in Ollama:
        # never zero, also for a model that was already loaded.
        load = max(lease.load_seconds, time.perf_counter() - asked, 1e-9)
        if prepare is not None:
            prepare(lease.runner, payload, cancel)
        gen = lease.runner.request("generate", payload, cancel)
        try:
            while True:
                try:
                    piece = next(gen)
                except StopIteration as stop:
                    final = stop.value
                    break
                yield {key: piece, "done": False}
        finally:
            gen.close()
    done = {key: "", "done": True, "done_reason": final["done_reason"], **_metrics(start, load, final)}
    done["context"] = final.get("context", [])
    yield done


def _load_or_unload(engine: Engine, spec, req: dict, key: str, cancel) -> Iterator[dict]:
    keep = req.get("keep_alive")
    if keep is not None and keep == 0:
        engine.unload(spec)
        yield {key: "", "done": True, "done_reason": "unload"}
        return
    merged = engine.options(spec, req.get("options"))
    with engine.lease(spec, merged, keep_alive_arg(keep), cancel):
        pass
    yield {key: "", "done": True, "done_reason": "load"}


def generate(engine: Engine, req: dict, cancel=None) -> Iterator[dict]:
    """req: the GenerateRequest fields as a dict (system/template None when unset)."""
    start = time.perf_counter()
    name = req.get("model") or ""
    if not name:
        raise NotFound("model '' not found")
    spec = engine.spec(name, f"model '{name}' not found")
    _check_common(req)
    raw = bool(req.get("raw"))
    if raw and (req.get("template") or req.get("system") or req.get("context")):
        raise InvalidArgument("raw mode does not support template, system, or context")
    prompt = req.get("prompt") or ""
    if not prompt and req.get("keep_alive") == 0:
        yield from _load_or_unload(engine, spec, req, "response", cancel)
        return
    caps = model_capabilities(spec, req.get("template"))
    if "completion" not in caps:
        raise InvalidArgument(f'"{name}" does not support generate')
    if req.get("suffix") and "insert" not in caps:
        raise InvalidArgument(f'"{name}" does not support insert')
    think, fmt = _think_and_format(name, req, caps)
    if not prompt:
        yield from _load_or_unload(engine, spec, req, "response", cancel)
        return
    context = list(req.get("context") or [])
    if raw:
        text = prompt
    else:
        messages = prompts.generate_messages(spec, prompt, req.get("system"), bool(context))
        text = prompts.render(spec, messages, template=req.get("template"), suffix=req.get("suffix") or "",
                              prompt=prompt, think=template_think(think))
    payload = {"prompt": text, "context": context, "format": fmt, "truncate": req.get("truncate"),
               "shift": req.get("shift"), "add_bos": not prompts.bos_in_text(spec, text)}
    merged = engine.options(spec, req.get("options"))
    keep_alive = keep_alive_arg(req.get("keep_alive"))
    payload.update(logprob_fields(req))
    out = Output.for_request("response", template_of(spec, req.get("template")), text, think)
    for item in out.shape(_stream(engine, spec, merged, keep_alive, payload, cancel, "response", start)):
        if item["done"] and raw:
            item.pop("context", None)
        yield item


def _think_and_format(name: str, req: dict, caps) -> tuple[str, str]:
    """The checks generate and chat share once capabilities are known: thinking, then the format."""
    think = req.get("think") or ""
    if think not in ("true", "false", "high", "medium", "low", "max", ""):
        raise InvalidArgument(f'invalid think value: "{think}" '
                              '(must be "high", "medium", "low", "max", true, or false)')
    if think not in THINK_OFF and "thinking" not in caps:
        raise InvalidArgument(f'"{name}" does not support thinking')
    return default_think(think, caps), check_format(req.get("format") or "")


def _fit_chat(spec, convo: list[dict], render, runner, payload: dict, cancel=None) -> None:
    """Ollama's chat truncation (service/prompt/truncate.py) against the loaded runner's context and
    tokenizer: the prompt keeps the system messages and the most recent whole turns that fit. A candidate
    is tokenized only until it is known not to fit (the runner's "limit"), so each costs at most about
    num_ctx tokens of work, and cancelling the request stops it."""
    limit = int((getattr(runner, "info", None) or {}).get("n_ctx") or 0) - 1  # room for one new token
    text = payload["prompt"]
    if limit <= 0 or len(text.encode("utf-8")) + 2 <= limit:  # a token is at least one byte (+ BOS/EOS)
        return

    def count(candidate: str) -> int:
        _, final = runner.call("tokenize", {"texts": [candidate], "add_bos": not prompts.bos_in_text(spec, candidate),
                                            "limit": limit}, cancel)
        return int(final["counts"][0])

    _, text = fit_messages(convo, render, count, limit, text)
    payload["prompt"], payload["add_bos"] = text, not prompts.bos_in_text(spec, text)


def chat(engine: Engine, req: dict, cancel=None) -> Iterator[dict]:
    """req: the ChatRequest fields as a dict; messages as [{role, content, ...}]. Yields "content" pieces."""
    start = time.perf_counter()
    name = req.get("model") or ""
    if not name:
        raise InvalidArgument("model is required")
    spec = engine.spec(name, f"model '{name}' not found")
    _check_common(req)
    messages = list(req.get("messages") or [])
    if not messages and req.get("keep_alive") == 0:
        yield from _load_or_unload(engine, spec, req, "content", cancel)
        return
    caps = model_capabilities(spec)
    if "completion" not in caps:
        raise InvalidArgument(f'"{name}" does not support chat')
    if req.get("tools") and "tools" not in caps:
        raise InvalidArgument(f"{parse_name(name).full} does not support tools")
    think, fmt = _think_and_format(name, req, caps)
    if not messages:
        yield from _load_or_unload(engine, spec, req, "content", cancel)
        return
    convo = prompts.chat_messages(spec, messages)
    tools, think_value = req.get("tools") or None, template_think(think)

    def render(msgs: list[dict]) -> str:
        return prompts.render(spec, msgs, tools=tools, think=think_value)

    text = render(convo)
    payload: dict = {"prompt": text, "context": [], "format": fmt, "truncate": req.get("truncate"),
               "shift": req.get("shift"), "add_bos": not prompts.bos_in_text(spec, text)}
    # Longer than the context: drop the oldest turns (truncate=false: the runner refuses it instead).
    prepare = None if req.get("truncate") is False else functools.partial(_fit_chat, spec, convo, render)
    merged = engine.options(spec, req.get("options"))
    payload.update(logprob_fields(req))
    out = Output.for_request("content", template_of(spec), text, think, tools)
    stream = _stream(engine, spec, merged, keep_alive_arg(req.get("keep_alive")), payload, cancel, "content", start,
                     prepare)
    for item in out.shape(stream):
        item.pop("context", None)
        yield item
