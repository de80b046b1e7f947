"""The tool-call parser on each family's output, fed whole and in every split (a tag or the JSON may
arrive in pieces), and the tag Ollama derives from a model's Go template."""

import pytest

from corral.service.prompt.tools import BARE, ToolCallParser, json_end, template_tag

TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}},
         {"type": "function", "function": {"name": "get_time"}}]

QWEN_TEMPLATE = """{{- range $i, $_ := .Messages }}
{{- if eq .Role "assistant" }}<|im_start|>assistant
{{ if .Content }}{{ .Content }}
{{- else if .ToolCalls }}<tool_call>
{{ range .ToolCalls }}{"name": "{{ .Function.Name }}", "arguments": {{ .Function.Arguments }}}
{{ end }}</tool_call>
{{- end }}<|im_end|>
{{ else }}<|im_start|>{{ .Role }}
{{ .Content }}<|im_end|>
{{ end }}{{ end }}<|im_start|>assistant
"""
LLAMA3_TEMPLATE = """{{- range .Messages }}<|start_header_id|>{{ .Role }}<|end_header_id|>
{{- if .ToolCalls }}
{{ range .ToolCalls }}{"name": "{{ .Function.Name }}", "parameters": {{ .Function.Arguments }}}{{ end }}
{{- else }}
{{ .Content }}{{ end }}<|eot_id|>{{ end }}<|start_header_id|>assistant<|end_header_id|>

"""
MISTRAL_TEMPLATE = """{{- range .Messages }}
{{- if eq .Role "user" }}[INST] {{ .Content }}[/INST]
{{- else if .ToolCalls }}[TOOL_CALLS][{{ range .ToolCalls }}{"name": "{{ .Function.Name }}", "arguments": \
{{ .Function.Arguments }}}{{ end }}]</s>
{{- else }} {{ .Content }}</s>{{ end }}{{ end }}"""
CUSTOM_TEMPLATE = """{{ range .Messages }}{{ if .ToolCalls }}  >>>CALL: {{ range .ToolCalls }}{{ json .Function }}\
{{ end }}{{ else }}{{ .Content }}{{ end }}{{ end }}"""


def run(text: str, tag: str, step: int):
    parser = ToolCallParser(TOOLS, tag)
    content, calls = [], []
    for i in range(0, len(text), step):
        c, k = parser.add(text[i : i + step])
        content.append(c)
        calls += k
    c, k = parser.finish()
    return "".join(content) + c, calls + k


def names_args(calls):
    return [(c["function"]["index"], c["function"]["name"], c["function"]["arguments"]) for c in calls]


@pytest.mark.parametrize("template, tag", [(QWEN_TEMPLATE, "<tool_call>"), (LLAMA3_TEMPLATE, BARE),
                                           (MISTRAL_TEMPLATE, "[TOOL_CALLS]"), (CUSTOM_TEMPLATE, ">>>CALL:"),
                                           ("{{ .Prompt }}", BARE), (None, BARE), ("{{ .Broken", BARE)])
def test_tag_from_template(template, tag):
    assert template_tag(template) == tag


CASES = [
    # Qwen / Hermes: one tag per call, text around kept, arguments as JSON text accepted
    ('Let me look. <tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n'
     '<tool_call>{"name": "get_time", "arguments": "{\\"zone\\": \\"UTC\\"}"}</tool_call> Done.',
     "<tool_call>", "Let me look. \n Done.",
     [(0, "get_weather", {"city": "Paris"}), (1, "get_time", {"zone": "UTC"})]),
    # Mistral: an array after [TOOL_CALLS], brackets inside strings do not end it
    ('[TOOL_CALLS] [{"name": "get_weather", "arguments": {"city": "P]a{ris"}}, {"name": "get_time", "arguments": {}}]',
     "[TOOL_CALLS]", "", [(0, "get_weather", {"city": "P]a{ris"}), (1, "get_time", {})]),
    # Llama 3.x: <|python_tag|> then JSON with "parameters"
    ('<|python_tag|>{"name": "get_weather", "parameters": {"city": "Paris", "days": 3}}', BARE, "",
     [(0, "get_weather", {"city": "Paris", "days": 3})]),
    # Llama 3.x bare JSON, two calls separated by ';'
    ('{"name": "get_weather", "parameters": {"city": "Paris"}}; {"name": "get_time", "parameters": {}}', BARE,
     "", [(0, "get_weather", {"city": "Paris"}), (1, "get_time", {})]),
    # the tag a custom template prints, with an OpenAI-style wrapped call
    ('>>>CALL: {"type": "function", "function": {"name": "get_time", "arguments": {"zone": "CET"}}}', ">>>CALL:",
     "", [(0, "get_time", {"zone": "CET"})]),
]


@pytest.mark.parametrize("step", [1, 2, 5, 10_000])
@pytest.mark.parametrize("text, tag, content, calls", CASES)
def test_family_formats_in_every_split(text, tag, content, calls, step):
    got_content, got_calls = run(text, tag, step)
    assert got_content == content
    assert names_args(got_calls) == calls
    assert all(c["id"].startswith("call_") and len(c["id"]) == 13 for c in got_calls)


@pytest.mark.parametrize("step", [1, 3, 10_000])
@pytest.mark.parametrize("text, tag", [
    ('The answer is {"name": "get_weather", "parameters": {}}', BARE),  # bare JSON only at the start
    ('{"name": "unknown_tool", "parameters": {}} and more', BARE),  # not one of the request's tools
    ('<tool_call>{"name": "get_weather", "arguments": {"city": "Pa', "<tool_call>"),  # never closed
    ("I like <tool_call> tags", "<tool_call>"),  # a tag without JSON
    ("almost a tag: <tool_ca", "<tool_call>"),
    ('{"a": 1}', BARE),  # JSON that is no call
    ("plain answer", BARE),
])
def test_what_is_no_call_stays_content(text, tag, step):
    assert run(text, tag, step) == (text, [])


def test_a_call_is_emitted_as_soon_as_its_json_closes():
    parser = ToolCallParser(TOOLS, "<tool_call>")
    assert parser.add("Sure <tool_call>\n{") == ("Sure ", [])
    assert parser.add('"name": "get_time", "arguments": {}') == ("", [])
    content, calls = parser.add("}\n</tool")
    assert content == "" and names_args(calls) == [(0, "get_time", {})]
    assert parser.add("_call> bye") == (" bye", [])


def test_json_end():
    assert json_end('{"a": "}"}x', 0) == 10
    assert json_end('x[1, [2], "]"]', 1) == 14
    assert json_end('{"a": {', 0) == -1
    assert json_end('{"a": "\\"}"}', 0) == 12
