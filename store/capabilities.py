"""Model capabilities by Ollama's classic rules (spec §5 show), from GGUF metadata and the template text.

Why here and not in the engine: show, the tags listing and the generate/chat/embed checks ("x" does not
support chat) must agree, and all of them can be answered from the store without loading a model. The
template is inspected textually: only which fields its actions reference matters, like Go's
template.Vars(), so no template engine is needed.

Rules, in order: `embedding` if the GGUF has `<arch>.pooling_type`, else `completion`; `vision` if
`<arch>.vision.block_count` or a projector layer; `audio` if `<arch>.audio.block_count`; `tools` if the
template references `.Tools`; `insert` if it references `.Suffix`; `thinking` if `.Thinking` is printed
inside `range .Messages` between literal tags (`<think>`...`</think>`), or the family is gpt-oss.
"""

from __future__ import annotations

import re

_ACTION_RE = re.compile(r"\{\{(.*?)\}\}", re.S)
_COMMENT_RE = re.compile(r"/\*.*?\*/", re.S)
_STRING_RE = re.compile(r'"(?:[^"\\]|\\.)*"|`[^`]*`')
_FIELD_RE = re.compile(r"(?<![0-9])\.([A-Za-z_]\w*)")  # every segment of .A.B, $.A, $x.A
_RANGE_MESSAGES_RE = re.compile(r"\{\{-?\s*range\b[^}]*\.Messages\b[^}]*\}\}", re.S)
_THINKING_RE = re.compile(r"(<[^<>\s/][^<>]*>)\s*\{\{-?\s*\.Thinking\s*-?\}\}\s*(</[^<>]+>)", re.S)


def template_vars(template: str) -> set[str]:
    """Lower-cased field names referenced by the template's actions (Go template.Vars())."""
    names: set[str] = set()
    for action in _ACTION_RE.findall(template or ""):
        action = _STRING_RE.sub('""', _COMMENT_RE.sub("", action))
        for match in _FIELD_RE.finditer(action):
            names.add(match.group(1).lower())
    return names


def thinking_tags(template: str) -> tuple[str, str] | None:
    """The literal (opening, closing) tags around `.Thinking` inside `range .Messages`, if any."""
    start = _RANGE_MESSAGES_RE.search(template or "")
    if start is None:
        return None
    match = _THINKING_RE.search(template, start.end())
    return (match.group(1), match.group(2)) if match else None


def capabilities(kv: dict | None, architecture: str, template: str | None, has_projector: bool,
                 family: str = "") -> list[str]:
    """The capability list of a model. `kv` is the model GGUF's key/values (None if it has none)."""
    caps: list[str] = []
    if kv is not None:
        caps.append("embedding" if f"{architecture}.pooling_type" in kv else "completion")
        if f"{architecture}.vision.block_count" in kv:
            caps.append("vision")
        if f"{architecture}.audio.block_count" in kv:
            caps.append("audio")
    if template is None:
        return caps
    names = template_vars(template)
    if "tools" in names:
        caps.append("tools")
    if "suffix" in names:
        caps.append("insert")
    if has_projector and "vision" not in caps:
        caps.append("vision")
    if thinking_tags(template) is not None or family in ("gptoss", "gpt-oss"):
        caps.append("thinking")
    return caps
