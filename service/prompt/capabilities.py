"""Model capabilities by Ollama's classic rules (spec §5 show), from GGUF metadata and the template text.

Why one function for every caller: show's list and the generate/chat checks ("x" does not support chat)
must agree, so both ask `model_capabilities` about the same template: a generate request's own template,
else the model's template layer, else the GGUF's Jinja chat template (the one the prompt is rendered
with), else none.

Why textual inspection and not the template parser next door: only which fields the template's actions
reference matters, like Go's template.Vars(), and the text may not be a Go template at all (a GGUF's
Jinja chat template) or may not parse (a model written by another tool). Show and the checks must still
answer for those, so nothing here can fail.

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
_JINJA_TOOLS_RE = re.compile(r"\{[{%][^}]*\btools\b", re.S)  # `tools` read inside a Jinja tag
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
    names = template_vars(template or "")
    if "tools" in names:
        caps.append("tools")
    if "suffix" in names:
        caps.append("insert")
    if has_projector and "vision" not in caps:
        caps.append("vision")
    if thinking_tags(template or "") is not None or family in ("gptoss", "gpt-oss"):
        caps.append("thinking")
    return caps


def model_capabilities(model, template: str | None = None) -> list[str]:
    """The capabilities of a store model (ModelSpec or LoadedModel: gguf, template, projector_paths,
    config); `template` is a generate request's own template, which then stands in for the model's."""
    info = model.gguf
    text = template if template is not None else model.template
    jinja = None
    if text is None and info is not None:
        text = jinja = info.chat_template
    caps = capabilities(info.kv if info else None, info.architecture if info else "", text,
                        bool(model.projector_paths), model.config.get("model_family", ""))
    # A model served through its own Jinja template (no Go template matched) can call tools when that
    # template renders the `tools` it is given (prompts.render_jinja passes them).
    if jinja and "tools" not in caps and _JINJA_TOOLS_RE.search(jinja):
        caps.insert(1 if caps and caps[0] in ("completion", "embedding") else 0, "tools")
    return caps
