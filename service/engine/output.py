"""From the runner's generated text to Ollama's reply fields: answer, thinking, tool calls and logprobs.

Why between the runner and the API: the runner streams plain text (with log probabilities when asked,
as {"text", "logprobs"} items), and what a client gets depends on the request and the model's template:
a thinking model's reasoning goes to `thinking` (service/prompt/thinking.py), a chat with `tools` gets
the calls the model wrote as `tool_calls` (service/prompt/tools.py), and only what is left is the
answer. This module chains those parsers over the stream, holding back nothing longer than a parser
needs, so every field still streams as it is generated. It is what Ollama's generate and chat handlers
do with the runner's completion callbacks.
"""

from __future__ import annotations

from collections.abc import Iterator

from corral.service.prompt.capabilities import thinking_tags
from corral.service.prompt.thinking import ThinkingParser
from corral.service.prompt.tools import ToolCallParser, template_tag

THINK_OFF = ("", "false")


def default_think(think: str, caps) -> str:
    """The request's think as the prompt and parsers use it: unset on a thinking model means "true"
    (Ollama turns thinking on by default for models that can think)."""
    if not think and "thinking" in caps:
        return "true"
    return think


def template_think(think: str):
    """The think value templates see (.Think, .ThinkLevel, .IsThinkSet): None when unset, a bool for
    "true"/"false" (so `think: false` reaches templates that turn thinking off), else the level."""
    if not think:
        return None
    if think in ("true", "false"):
        return think == "true"
    return think


def logprob_fields(req: dict) -> dict:
    """The runner payload's logprobs fields (generation.py computes them)."""
    return {"logprobs": bool(req.get("logprobs")), "top_logprobs": int(req.get("top_logprobs") or 0)}


def template_of(spec, template: str | None = None) -> str | None:
    """The template text a request renders with: its own, the model's layer, else the GGUF's chat
    template (as capabilities.model_capabilities judges it)."""
    if template:
        return template
    if spec.template is not None:
        return spec.template
    info = getattr(spec, "gguf", None)
    return info.chat_template if info is not None else None


class Output:
    """Splits one request's generated text into the reply's fields. `key` is "response" (generate) or
    "content" (chat)."""

    def __init__(self, key: str, thinking: ThinkingParser | None = None, tools: ToolCallParser | None = None):
        self.key = key
        self.thinking = thinking
        self.tools = tools

    @classmethod
    def for_request(cls, key: str, template: str | None, prompt: str, think: str, tools: list | None = None):
        """The parsers a request needs: thinking when it thinks and the template has thinking tags,
        tool calls when it offers tools."""
        thinking = None
        tags = thinking_tags(template or "") if think not in THINK_OFF else None
        if tags is not None:
            thinking = ThinkingParser(*tags)
            thinking.opened_in(prompt)
        parser = ToolCallParser(tools, template_tag(template)) if tools else None
        return cls(key, thinking, parser)

    def feed(self, piece) -> dict | None:
        """One runner item (text, or {"text", "logprobs"}) -> a reply chunk, or None if all is held back."""
        if isinstance(piece, dict):
            text, logprobs = piece.get("text") or "", piece.get("logprobs") or []
        else:
            text, logprobs = piece, []
        thought = ""
        if self.thinking is not None:
            thought, text = self.thinking.add(text)
        calls: list[dict] = []
        if self.tools is not None and text:
            text, calls = self.tools.add(text)
        return self._chunk(text, thought, calls, logprobs)

    def finish(self) -> dict | None:
        """What the parsers still hold at the end of the output, as a last chunk (or None)."""
        thought = text = ""
        calls: list[dict] = []
        if self.thinking is not None:
            thought, text = self.thinking.finish()
        if self.tools is not None:
            text, calls = self.tools.add(text)
            rest, more = self.tools.finish()
            text, calls = text + rest, calls + more
        return self._chunk(text, thought, calls, [])

    def _chunk(self, text: str, thought: str, calls: list[dict], logprobs: list[dict]) -> dict | None:
        if not (text or thought or calls or logprobs):
            return None
        chunk: dict = {self.key: text, "done": False}
        if thought:
            chunk["thinking"] = thought
        if calls:
            chunk["tool_calls"] = calls
        if logprobs:
            chunk["logprobs"] = logprobs
        return chunk

    def shape(self, items: Iterator[dict]) -> Iterator[dict]:
        """Runs the stream of textgen items ({key: runner item, "done": False}, then the final one)
        through the parsers."""
        for item in items:
            if item.get("done"):
                last = self.finish()
                if last is not None:
                    yield last
                yield item
                continue
            chunk = self.feed(item[self.key])
            if chunk is not None:
                yield chunk
