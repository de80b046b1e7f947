"""Tool calls: finding them in a model's streamed output and turning them into Ollama's `tool_calls`.

Why a parser of our own and not the model's chat template: a model writes its calls as text, in its
family's format, and Ollama clients expect `message.tool_calls` objects
(`{"id", "function": {"index", "name", "arguments": {...}}}`) with the text around them left in
`content`. The formats handled:

* JSON inside a tag: Qwen/Hermes `<tool_call>{"name": .., "arguments": {..}}</tool_call>` (one tag per
  call), Mistral `[TOOL_CALLS] [{"name": .., "arguments": {..}}, ...]`, Llama 3.x `<|python_tag|>{...}`;
* the tag Ollama derives from the model's Go template (the first literal text inside
  `{{ if .ToolCalls }}`, cut before any `{`), so a template that prints its calls after some other
  marker is parsed the same way;
* bare JSON (`{"name": .., "parameters": {..}}`, Llama 3.x and templates with no tag): only when the
  output starts with it, as Ollama does, so an answer that merely contains JSON stays an answer.

A call counts only when its name is one of the request's tools (as Ollama's parser requires); anything
that turns out not to be a call is given back as content. Calls are emitted as soon as their JSON
closes, so a client sees each call while the model keeps writing.
"""

from __future__ import annotations

import functools
import json
import os
import re

from corral.service.prompt.gotemplate import TemplateError
from corral.service.prompt.gotemplate import parse as parse_go
from corral.service.prompt.gotemplate.nodes import ActionNode, BranchNode, FieldNode, ListNode, TextNode

FAMILY_TAGS = ("<tool_call>", "<|python_tag|>", "[TOOL_CALLS]")
BARE = "{"  # the tag of templates that print calls as plain JSON
_SEPARATORS = " \t\r\n;,"


# -- the tag a template prints before its calls (Ollama's tools.parseTag) ------------------------------


def _uses_tool_calls(node: BranchNode) -> bool:
    return any(isinstance(arg, FieldNode) and "ToolCalls" in arg.ident
               for cmd in node.pipe.cmds for arg in cmd.args)


def _tool_calls_branch(nodes) -> BranchNode | None:
    """The first `if` whose condition reads .ToolCalls, searched through if/range/with bodies."""
    for node in nodes:
        if isinstance(node, BranchNode):
            if node.kind == "if" and _uses_tool_calls(node):
                return node
            for body in (node.list, node.else_list):
                found = _tool_calls_branch(body.nodes) if body is not None else None
                if found is not None:
                    return found
        elif isinstance(node, ListNode):
            found = _tool_calls_branch(node.nodes)
            if found is not None:
                return found
    return None


def _first_text(nodes) -> str | None:
    """The first non-blank literal text, depth first, stopping at the first action (what follows an
    action is no longer a fixed prefix)."""
    for node in nodes:
        if isinstance(node, TextNode):
            if node.text.strip():
                return node.text
        elif isinstance(node, ListNode):
            text = _first_text(node.nodes)
            if text is not None:
                return text
        elif isinstance(node, BranchNode):
            for body in (node.list, node.else_list):
                text = _first_text(body.nodes) if body is not None else None
                if text is not None:
                    return text
            return None
        elif isinstance(node, ActionNode):
            return None
    return None


@functools.lru_cache(maxsize=64)
def template_tag(template: str | None) -> str:
    """The tool-call tag of a Go template: "<tool_call>", "[TOOL_CALLS]", ... or BARE."""
    if not template:
        return BARE
    try:
        root = parse_go(template)[""]
    except TemplateError:
        return BARE
    branch = _tool_calls_branch(root.nodes)
    text = _first_text(branch.list.nodes) if branch is not None else None
    if text is None:
        return BARE
    tag = text.replace("\r\n", "\n").split("{", 1)[0].strip()
    if len(tag) > 1:
        tag = tag.rstrip("[").rstrip()  # "[TOOL_CALLS][" -> "[TOOL_CALLS]": the array is the JSON
    return tag or BARE


# -- JSON scanning --------------------------------------------------------------------------------------


def json_end(text: str, start: int) -> int:
    """End of the balanced JSON object or array starting at text[start] ('{' or '['), or -1 if the text
    stops before it closes. Brackets inside strings do not count."""
    depth = 0
    in_string = escaped = False
    for i in range(start, len(text)):
        c = text[i]
        if in_string:
            if escaped:
                escaped = False
            elif c == "\\":
                escaped = True
            elif c == '"':
                in_string = False
        elif c == '"':
            in_string = True
        elif c in "{[":
            depth += 1
        elif c in "}]":
            depth -= 1
            if depth == 0:
                return i + 1
    return -1


def _arguments(value) -> dict | None:
    if isinstance(value, dict):
        return value
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except ValueError:
            return None
        return parsed if isinstance(parsed, dict) else None
    return None


def calls_in(value, names: set[str]) -> list[tuple[str, dict]] | None:
    """(name, arguments) of each call in a parsed JSON value (an object or a list of them), or None if
    any element is not a call of a known tool. Accepts "arguments" or "parameters" (an object or JSON
    text) and OpenAI's {"function": {...}} wrapping."""
    items = value if isinstance(value, list) else [value]
    out: list[tuple[str, dict]] = []
    for item in items:
        if not isinstance(item, dict):
            return None
        if isinstance(item.get("function"), dict) and "name" not in item:
            item = item["function"]
        name = item.get("name")
        if not isinstance(name, str) or name not in names:
            return None
        raw = item.get("arguments", item.get("parameters", {}))
        args = _arguments(raw if raw is not None else {})
        if args is None:
            return None
        out.append((name, args))
    return out or None


def _closing(tag: str) -> str:
    """`<tool_call>` closes with `</tool_call>`; the other tags have no closing text."""
    match = re.fullmatch(r"<([A-Za-z_][\w-]*)>", tag)
    return f"</{match.group(1)}>" if match else ""


def call_id() -> str:
    """An id like Ollama's ("call_" and 8 random lower-case letters or digits)."""
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    return "call_" + "".join(alphabet[b % len(alphabet)] for b in os.urandom(8))


# -- the streaming parser ------------------------------------------------------------------------------


class ToolCallParser:
    """Feed the answer's pieces with add(); each call returns (content, calls) ready to send, calls as
    Ollama's tool_call objects. finish() returns the content still held back."""

    def __init__(self, tools: list[dict], tag: str = BARE):
        self.names = {n for n in (_tool_name(t) for t in tools) if n}
        self.tags = [t for t in dict.fromkeys([tag, *FAMILY_TAGS]) if t != BARE]
        self.bare = tag == BARE
        self.buf = ""
        self.started = False  # any non-blank content or call seen (bare JSON counts only at the start)
        self.chained = False  # right after a bare call, where another may follow
        self.closing = ""  # the closing tag expected after a tagged call ("</tool_call>")
        self.index = 0

    def add(self, text: str) -> tuple[str, list[dict]]:
        self.buf += text
        content: list[str] = []
        calls: list[dict] = []
        while self.buf:
            step = self._step(content, calls)
            if not step:
                break
        return "".join(content), calls

    def finish(self) -> tuple[str, list[dict]]:
        content, calls = self.add("")
        rest, self.buf = self.buf, ""
        return content + rest, calls

    def _step(self, content: list[str], calls: list[dict]) -> bool:
        """Consumes what it can from the buffer; False when it must wait for more text."""
        buf = self.buf
        if self.closing:  # drop the closing tag after a tagged call (and the blanks before it)
            trimmed = buf.lstrip()
            if trimmed.startswith(self.closing):
                self.buf = buf = trimmed[len(self.closing):]
            elif self.closing.startswith(trimmed):
                return False
            self.closing = ""
            if not buf:
                return False
        if self.bare and (not self.started or self.chained):
            lead = len(buf) - len(buf.lstrip(_SEPARATORS if self.chained else " \t\r\n"))
            if lead == len(buf):
                return False
            if buf[lead] == "{":
                if self.chained:
                    self.buf = buf = buf[lead:]
                    lead = 0
                return self._call_at(lead, lead, content, calls, closing="")
            self.chained = False
        hit, tag = self._find_tag(buf)
        if tag is None:
            keep = max((_partial(buf, t) for t in self.tags), default=0)
            self._emit(buf[: len(buf) - keep], content)
            self.buf = buf[len(buf) - keep:]
            return False
        start = hit + len(tag)
        while start < len(buf) and buf[start] in " \t\r\n":
            start += 1
        if start == len(buf):
            self._emit(buf[:hit], content)
            self.buf = buf[hit:]
            return False
        if buf[start] not in "{[":
            self._emit(buf[:start], content)  # a tag without JSON after it: plain text
            self.buf = buf[start:]
            return True
        return self._call_at(hit, start, content, calls, closing=_closing(tag))

    def _call_at(self, hit: int, start: int, content: list[str], calls: list[dict], closing: str) -> bool:
        """The JSON at buf[start] (after text buf[:hit] and a tag) as calls; False while incomplete."""
        buf = self.buf
        end = json_end(buf, start)
        if end < 0:
            self._emit(buf[:hit], content)
            self.buf = buf[hit:]
            return False
        try:
            found = calls_in(json.loads(buf[start:end]), self.names)
        except ValueError:
            found = None
        if found is None:  # not a call after all: the text stays content
            self.chained = False
            self._emit(buf[:end], content)
            self.buf = buf[end:]
            return True
        self._emit(buf[:hit], content)
        self.started = True
        for name, args in found:
            calls.append({"id": call_id(), "function": {"index": self.index, "name": name, "arguments": args}})
            self.index += 1
        self.buf = buf[end:]
        self.chained = self.bare and hit == start  # bare calls may follow: `{...}; {...}`
        if closing:
            self.closing = closing
        return True

    def _find_tag(self, buf: str) -> tuple[int, str | None]:
        best, found = len(buf), None
        for tag in self.tags:
            i = buf.find(tag)
            if 0 <= i < best or (i == best and found is not None and len(tag) > len(found)):
                best, found = i, tag
        return best, found

    def _emit(self, text: str, content: list[str]) -> None:
        if text:
            content.append(text)
            if text.strip():
                self.started = True


def _partial(text: str, tag: str) -> int:
    for n in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:n]):
            return n
    return 0


def _tool_name(tool) -> str:
    fn = tool.get("function") if isinstance(tool, dict) else None
    return str(fn.get("name") or "") if isinstance(fn, dict) else ""
