"""Turning a generate or chat request into the prompt text the model sees.

Why here: the rules for what goes into a prompt are Ollama's (server/routes.go and server/prompt.go),
not the template engine's: which template wins (the request's, the model's template layer, else the
GGUF's own Jinja `tokenizer.chat_template`, else `{{ .Prompt }}`), where the system prompt comes from
(request, else model), that the model's seeded MESSAGEs precede the request's, and that raw mode skips
all of it. Go templates are rendered by service/prompt/templates.py; Jinja chat templates (models created
from a bare GGUF without a template layer) are rendered here with a sandboxed jinja2 environment, the
way Hugging Face tokenizers apply them.
"""

from __future__ import annotations

import datetime
import functools
import json

from jinja2.sandbox import ImmutableSandboxedEnvironment

from corral.service.prompt.templates import DEFAULT_TEMPLATE, TemplateError, render_prompt
from corral.store.errors import InvalidArgument


def generate_messages(spec, prompt: str, system: str | None, has_context: bool) -> list[dict]:
    """Ollama's generate conversation: system (request, else model), the model's MESSAGEs, the prompt."""
    msgs: list[dict] = []
    sys_text = system if system else (spec.system or "")
    if sys_text:
        msgs.append({"role": "system", "content": sys_text})
    if not has_context:
        msgs.extend(dict(m) for m in spec.messages or [])
    msgs.append({"role": "user", "content": prompt})
    return msgs


def chat_messages(spec, messages: list[dict]) -> list[dict]:
    """Ollama's chat conversation: the model's MESSAGEs then the request's, with the model's system
    prompt first unless the request starts with its own."""
    msgs = [dict(m) for m in spec.messages or []] + [dict(m) for m in messages]
    if spec.system and (not messages or messages[0].get("role") != "system"):
        msgs.insert(0, {"role": "system", "content": spec.system})
    return msgs


def render(spec, messages: list[dict], *, template: str | None = None, suffix: str = "", prompt: str = "",
           tools: list | None = None, think=None) -> str:
    """Renders `messages` with the request's template, the model's, its GGUF Jinja, or the default."""
    text = template if template else spec.template
    if text is None and getattr(spec, "gguf", None) is not None and spec.gguf.chat_template:
        return render_jinja(spec, spec.gguf.chat_template, messages, tools=tools)
    text = text if text is not None else DEFAULT_TEMPLATE
    kwargs = {"messages": messages, "tools": tools or None, "suffix": suffix, "think": think}
    if suffix:
        kwargs["prompt"] = prompt
    try:
        return render_prompt(text, **kwargs)
    except TemplateError as exc:
        raise InvalidArgument(f"template error: {exc}") from None


@functools.lru_cache(maxsize=32)
def _jinja_template(source: str):
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)

    def raise_exception(message):
        raise InvalidArgument(f"template error: {message}")

    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.datetime.now().strftime(fmt)
    env.filters["tojson"] = lambda value, indent=None, **_: json.dumps(value, ensure_ascii=False, indent=indent)
    try:
        return env.from_string(source)
    except Exception as exc:
        raise InvalidArgument(f"template error: {exc}") from None


def _special_token(spec, key: str) -> str:
    kv = spec.gguf.kv if getattr(spec, "gguf", None) is not None else {}
    tokens = kv.get("tokenizer.ggml.tokens") or []
    index = kv.get(f"tokenizer.ggml.{key}_token_id")
    if isinstance(index, int) and 0 <= index < len(tokens):
        return str(tokens[index])
    return ""


def render_jinja(spec, source: str, messages: list[dict], tools: list | None = None) -> str:
    """A GGUF chat template applied as Hugging Face does (add_generation_prompt=True)."""
    try:
        return _jinja_template(source).render(
            messages=messages,
            tools=tools or None,
            add_generation_prompt=True,
            bos_token=_special_token(spec, "bos"),
            eos_token=_special_token(spec, "eos"),
        )
    except InvalidArgument:
        raise
    except Exception as exc:
        raise InvalidArgument(f"template error: {exc}") from None


def bos_in_text(spec, prompt: str) -> bool:
    """True when the rendered prompt already starts with the BOS token's text (Jinja templates often
    print it), so the tokenizer must not add a second one."""
    bos = _special_token(spec, "bos")
    return bool(bos) and prompt.startswith(bos)
