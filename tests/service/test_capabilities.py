"""Capability rules (spec §5 show, classic): which template fields and GGUF keys give which capability.

Why: generate, chat and embed refuse models by these lists ("x" does not support chat), so a false
positive or negative changes which requests succeed.
"""

import pytest

from corral.service.prompt.capabilities import capabilities, template_vars, thinking_tags

LLAMA3_TOOLS = """{{- if or .System .Tools }}<|start_header_id|>system<|end_header_id|>
{{- if .System }}{{ .System }}{{- end }}
{{- if .Tools }}You have tools: {{ range .Tools }}{{ json . }}{{ end }}{{- end }}<|eot_id|>
{{- end }}{{- range $i, $_ := .Messages }}{{ .Content }}{{ end }}"""


@pytest.mark.parametrize("template,expected", [
    ("{{ .Prompt }}", {"prompt"}),
    (LLAMA3_TOOLS, {"system", "tools", "messages", "content"}),
    ("{{ $.Tools }}{{ .Message.Suffix }}", {"tools", "message", "suffix"}),
    ('{{ "text .Tools inside a string" }}{{/* .Suffix in a comment */}}', set()),
    ("plain .Tools outside actions", set()),
    ("{{ printf \"%.2f\" 0.5 }}", set()),
    ("", set()),
])
def test_template_vars(template, expected):
    assert template_vars(template) == expected


def test_thinking_tags():
    qwen3 = ("{{- range $i, $_ := .Messages }}{{ if .Thinking }}<think>\n{{ .Thinking }}\n</think>\n"
             "{{ end }}{{ .Content }}{{ end }}")
    assert thinking_tags(qwen3) == ("<think>", "</think>")
    assert thinking_tags("<think>{{ .Thinking }}</think>{{ range .Messages }}{{ end }}") is None
    assert thinking_tags("{{ range .Messages }}{{ .Thinking }}{{ end }}") is None
    assert thinking_tags("{{ .Prompt }}") is None


def test_capability_rules():
    kv = {"llama.block_count": 2}
    assert capabilities(kv, "llama", "{{ .Prompt }}", False) == ["completion"]
    assert capabilities({"bert.pooling_type": 1}, "bert", "{{ .Prompt }}", False) == ["embedding"]
    assert capabilities({"gemma3.vision.block_count": 2}, "gemma3", None, False) == ["completion", "vision"]
    assert capabilities({"x.audio.block_count": 2}, "x", None, False) == ["completion", "audio"]
    assert capabilities(kv, "llama", LLAMA3_TOOLS + "{{ .Suffix }}", True) == \
        ["completion", "tools", "insert", "vision"]
    assert capabilities(kv, "gptoss", "{{ .Prompt }}", False, family="gptoss") == ["completion", "thinking"]
    assert capabilities(None, "", "{{ .Tools }}", False) == ["tools"]  # no GGUF: template rules only


def test_jinja_template_with_tools_gives_tools():
    """A model with no Go template is chatted through its GGUF's Jinja template, which may render tools."""
    from types import SimpleNamespace

    from corral.service.prompt.capabilities import model_capabilities

    def model(jinja):
        gguf = SimpleNamespace(kv={"llama.block_count": 2}, architecture="llama", chat_template=jinja)
        return SimpleNamespace(gguf=gguf, template=None, projector_paths=[], config={})

    with_tools = "{%- if tools %}{{ tools | tojson }}{% endif %}{% for m in messages %}{{ m.content }}{% endfor %}"
    assert model_capabilities(model(with_tools)) == ["completion", "tools"]
    plain = "{% for m in messages %}{{ m.content }} tools {% endfor %}"  # the word outside a tag
    assert model_capabilities(model(plain)) == ["completion"]
