"""Separating a thinking model's reasoning from its answer, as the text streams out of the runner.

Why a streaming state machine: thinking models write `<think>reasoning</think>answer` (the tags are
whatever the model's template prints around `.Thinking`, see capabilities.thinking_tags), and clients
want the reasoning in `thinking` and the answer in `response`/`message.content` while it is generated,
not after. A tag may arrive split over several pieces, so text that could be the start of a tag is held
back until it is decided. The rules follow Ollama's thinking parser: the opening tag counts only at the
start of the output (after whitespace), whitespace right after either tag is dropped, and an output that
does not start with the opening tag has no thinking at all. When the template already opened the tag at
the end of the prompt (`...<think>\\n`), the parser starts inside the reasoning (see `opened_in`).
"""

from __future__ import annotations

_LOOKING, _START, _THINKING, _AFTER, _DONE = range(5)


def _overlap(text: str, tag: str) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of `tag`."""
    for n in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:n]):
            return n
    return 0


class ThinkingParser:
    """Feed pieces with add(); each call returns (thinking, content) ready to send. finish() returns what
    was held back at the end of the output."""

    def __init__(self, opening: str, closing: str):
        self.opening = opening
        self.closing = closing
        self.state = _LOOKING
        self.buf = ""

    def opened_in(self, prompt: str) -> None:
        """Starts inside the reasoning when the prompt itself ends with the opening tag."""
        if self.state == _LOOKING and prompt.rstrip().endswith(self.opening):
            self.state = _START

    def add(self, text: str) -> tuple[str, str]:
        self.buf += text
        thinking: list[str] = []
        content: list[str] = []
        while True:
            buf = self.buf
            if self.state == _LOOKING:
                stripped = buf.lstrip()
                if stripped.startswith(self.opening):
                    self.buf = stripped[len(self.opening):]
                    self.state = _START
                    continue
                if not stripped or self.opening.startswith(stripped):
                    break  # only whitespace or part of the tag so far: wait
                self.state = _DONE  # no reasoning: the whole output is the answer, whitespace included
                content.append(buf)
                self.buf = ""
                break
            if self.state == _START:
                self.buf = buf.lstrip()
                if not self.buf:
                    break
                self.state = _THINKING
                continue
            if self.state == _THINKING:
                end = buf.find(self.closing)
                if end >= 0:
                    thinking.append(buf[:end])
                    self.buf = buf[end + len(self.closing):]
                    self.state = _AFTER
                    continue
                keep = _overlap(buf, self.closing)
                thinking.append(buf[: len(buf) - keep])
                self.buf = buf[len(buf) - keep:]
                break
            if self.state == _AFTER:
                self.buf = buf.lstrip()
                if self.buf:
                    self.state = _DONE
                    continue
                break
            content.append(buf)  # _DONE
            self.buf = ""
            break
        return "".join(thinking), "".join(content)

    def finish(self) -> tuple[str, str]:
        """What is still held back: part of a closing tag is reasoning, anything else is the answer."""
        rest, self.buf = self.buf, ""
        if self.state in (_START, _THINKING):
            return rest, ""
        if self.state == _LOOKING and not rest.strip():
            return "", ""
        return "", rest if self.state != _AFTER else ""
