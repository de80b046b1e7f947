"""Per-request caps on inference calls: what one Generate, Chat, Embed, Embeddings or EmbedStream may ask.

Why in the service and not the shim: a gRPC caller reaches the engine without the shim, and the /v1 routes
arrive through the same RPCs, so one check here covers every door (INVALID_ARGUMENT, which the shim
answers 400 with the text). Why before the engine: each cap guards a cost that is paid before the request
could fail on its own: a runner loaded with a huge context or batch (memory), a prompt tokenized and
rendered whole before truncation cuts it (CPU), an embed answer holding one vector per input (memory).
The values come from store.config.RequestLimits (CORRAL_MAX_*), read at each call as every setting is.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

from corral.protos.ollama.v1 import ollama_pb2 as pb
from corral.service.api import convert
from corral.store.config import RequestLimits
from corral.store.errors import InvalidArgument

TOKEN_ID_BYTES = 4  # a token id (context, input_tokens) counts as four bytes of input

# The options whose values load a bigger runner or run longer, with their variable and limit field.
_OPTION_CAPS = (
    ("num_ctx", "CORRAL_MAX_NUM_CTX", "max_num_ctx"),
    ("num_batch", "CORRAL_MAX_NUM_BATCH", "max_num_batch"),
    ("num_predict", "CORRAL_MAX_NUM_PREDICT", "max_num_predict"),
)


def text_bytes(text: str) -> int:
    """UTF-8 size of `text`, without encoding it when it is ASCII (an 8 MiB prompt is not copied)."""
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def check_options(options: dict | None, limits: RequestLimits) -> None:
    """num_ctx, num_batch, num_predict at most their limits. Only numbers are checked: a value of the
    wrong type gets its type error where options are merged (engine/options.py); negative num_predict
    (-1 unlimited, -2 fill the context) is left alone."""
    if not options:
        return
    for key, variable, field in _OPTION_CAPS:
        value = options.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            continue  # the merge refuses it with its own text
        limit = getattr(limits, field)
        if value > limit:
            shown = int(value) if value == int(value) else value
            raise InvalidArgument(f'option "{key}" is {shown}, above the limit of {limit} ({variable})')


def _check_prompt(size: int, limits: RequestLimits) -> None:
    if size > limits.max_prompt_bytes:
        raise InvalidArgument(f"prompt too large: {size} bytes, the limit is {limits.max_prompt_bytes} bytes "
                              "(CORRAL_MAX_PROMPT_BYTES)")


def generate_size(request: pb.GenerateRequest) -> int:
    """The text a generate request asks the server to render and tokenize (images excluded)."""
    return (text_bytes(request.prompt) + text_bytes(request.suffix) + text_bytes(request.system)
            + text_bytes(request.template) + text_bytes(request.format) + TOKEN_ID_BYTES * len(request.context))


def chat_size(request: pb.ChatRequest) -> int:
    """The text of a chat request's messages (role, content, thinking, tool names and calls), tools and
    format; images excluded."""
    size = text_bytes(request.format) + sum(tool.ByteSize() for tool in request.tools)
    for m in request.messages:
        size += (text_bytes(m.role) + text_bytes(m.content) + text_bytes(m.thinking) + text_bytes(m.tool_name)
                 + text_bytes(m.tool_call_id) + sum(call.ByteSize() for call in m.tool_calls))
    return size


def check_generate(request: pb.GenerateRequest) -> None:
    limits = RequestLimits.from_env()
    check_options(convert.options(request), limits)
    _check_prompt(generate_size(request), limits)


def check_chat(request: pb.ChatRequest) -> None:
    limits = RequestLimits.from_env()
    check_options(convert.options(request), limits)
    _check_prompt(chat_size(request), limits)


def _check_embed_bytes(size: int, limits: RequestLimits, what: str = "input") -> None:
    if size > limits.max_embed_bytes:
        raise InvalidArgument(f"{what} too large: {size} bytes, the limit is {limits.max_embed_bytes} bytes "
                              "(CORRAL_MAX_EMBED_BYTES)")


def check_embed(request: pb.EmbedRequest) -> None:
    limits = RequestLimits.from_env()
    check_options(convert.options(request), limits)
    count = len(request.input_tokens) or len(request.input)
    if count > limits.max_embed_inputs:
        raise InvalidArgument(f"too many inputs: {count}, the limit is {limits.max_embed_inputs} "
                              "(CORRAL_MAX_EMBED_INPUTS)")
    size = sum(text_bytes(text) for text in request.input)
    size += TOKEN_ID_BYTES * sum(len(tokens.ids) for tokens in request.input_tokens)
    _check_embed_bytes(size, limits)


def check_embeddings(request: pb.EmbeddingsRequest) -> None:
    limits = RequestLimits.from_env()
    check_options(convert.options(request), limits)
    _check_embed_bytes(text_bytes(request.prompt), limits, "prompt")


def checked_embed_stream(requests: Iterator[pb.EmbedStreamRequest]) -> Iterator[pb.EmbedStreamRequest]:
    """The EmbedStream's messages, each checked as it is read: the config's options, and every item at
    most max_embed_bytes (the stream's count is bounded by its window already). A refused message ends
    the stream with INVALID_ARGUMENT, through the stream's own error path."""
    limits = RequestLimits.from_env()
    for message in requests:
        if message.HasField("config"):
            check_options(convert.options(message.config), limits)
        for item in message.items:
            size = text_bytes(item.text)
            if size > limits.max_embed_bytes:
                raise InvalidArgument(f"item {item.id[:64]!r} too large: {size} bytes, the limit is "
                                      f"{limits.max_embed_bytes} bytes (CORRAL_MAX_EMBED_BYTES)")
        yield message
