"""Tool calls and thinking end to end: real generation by scripted tiny models (tests/scripted_models.py:
a GGUF built to write one exact text, e.g. a Qwen `<tool_call>` block), through the runner, the gRPC
service and the REST shim, streamed and not, with the official `ollama` client (a Python function as a
tool) and over gRPC. Also the prompt the template renders for tools and tool results, and Ollama's
errors for models without the capability.
"""

import json

import grpc
import pytest
import requests

from corral.protos.ollama.v1 import ollama_pb2 as pb
from corral.protos.structs import dict_to_struct, struct_to_dict
from corral.service.prompt.templates import render_prompt
from tests.models_helpers import create_from_gguf, upload
from tests.scripted_models import NEWLINE, write_scripted_gguf

QWEN = """{{- if or .System .Tools }}<|im_start|>system
{{- if .System }}
{{ .System }}
{{- end }}
{{- if .Tools }}
<tools>
{{- range .Tools }}
{{ json .Function }}
{{- end }}
</tools>
{{- end }}<|im_end|>
{{ end }}
{{- range $i, $_ := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 -}}
{{- if eq .Role "user" }}<|im_start|>user
{{ .Content }}<|im_end|>
{{ else if eq .Role "assistant" }}<|im_start|>assistant
{{ if .Thinking }}<think>{{ .Thinking }}</think>
{{ end }}{{ if .Content }}{{ .Content }}
{{- else if .ToolCalls }}<tool_call>
{{ range .ToolCalls }}{"name": "{{ .Function.Name }}", "arguments": {{ .Function.Arguments }}}
{{ end }}</tool_call>
{{- end }}{{ if not $last }}<|im_end|>
{{ end }}
{{- else if eq .Role "tool" }}<|im_start|>user
<tool_response name="{{ .ToolName }}">
{{ .Content }}
</tool_response><|im_end|>
{{ end }}
{{- if and (ne .Role "assistant") $last }}<|im_start|>assistant
{{ if and $.IsThinkSet (not $.Think) }}<think>

</think>

{{ end }}
{{- end }}
{{- end }}"""
LLAMA3 = """{{- if .Tools }}<|start_header_id|>system<|end_header_id|>

{{ range .Tools }}{{ json . }}
{{ end }}<|eot_id|>{{ end }}
{{- range .Messages }}<|start_header_id|>{{ .Role }}<|end_header_id|>
{{- if .ToolCalls }}
{{ range .ToolCalls }}{"name": "{{ .Function.Name }}", "parameters": {{ .Function.Arguments }}}{{ end }}
{{- else }}

{{ .Content }}{{ end }}<|eot_id|>{{ end }}<|start_header_id|>assistant<|end_header_id|>

"""
MISTRAL = """{{- range $i, $_ := .Messages }}
{{- if eq .Role "user" }}
{{- if and $.Tools (eq (len (slice $.Messages $i)) 1) }}[AVAILABLE_TOOLS] {{ json $.Tools }}[/AVAILABLE_TOOLS]
{{- end }}[INST] {{ .Content }}[/INST]
{{- else if eq .Role "assistant" }}
{{- if .ToolCalls }}[TOOL_CALLS][{{ range .ToolCalls }}{"name": "{{ .Function.Name }}", "arguments": \
{{ json .Function.Arguments }}}{{ end }}]</s>
{{- else }} {{ .Content }}</s>{{ end }}
{{- else if eq .Role "tool" }}[TOOL_RESULTS] {"content": {{ .Content }}}[/TOOL_RESULTS]
{{- end }}{{ end }}"""
# The template opens the reasoning itself when thinking is on (as DeepSeek-R1 and Qwen3 variants do).
OPENS_THINK = """{{- range .Messages }}<|im_start|>{{ .Role }}
{{ if .Thinking }}<think>{{ .Thinking }}</think>{{ end }}{{ .Content }}<|im_end|>
{{ end }}<|im_start|>assistant
{{ if $.Think }}<think>
{{ end }}"""

TWO_CALLS = ["Checking. ", "<tool_call>", '\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n',
             "</tool_call>", "\n<tool_call>\n", '{"name": "get_time", "arguments": {"zone": "UTC", "hours": 2}}',
             "\n</tool_call>"]
CALLS = [("get_weather", {"city": "Paris"}), ("get_time", {"zone": "UTC", "hours": 2})]
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
TIME = {"type": "function", "function": {
    "name": "get_time", "description": "Time in a zone",
    "parameters": {"type": "object", "properties": {"zone": {"type": "string"}, "hours": {"type": "integer"}}}}}
ASK = [{"role": "user", "content": "weather in Paris?"}]


def scripted(server, tmp_path, name: str, template: str, script: list[str], trigger: str = NEWLINE) -> str:
    path = write_scripted_gguf(tmp_path / f"{name}.gguf", {trigger: script})
    req = pb.CreateRequest(model=name, template=template)
    req.files["model.gguf"] = upload(server.stub, path)
    list(server.stub.Create(req))
    return name


def calls_of(message) -> list:
    return [(c["function"]["name"], c["function"]["arguments"]) for c in message.get("tool_calls") or []]


def post(shim, route: str, body: dict) -> requests.Response:
    return requests.post(f"{shim.url}{route}", json=body, timeout=60)


def stream_lines(shim, route: str, body: dict) -> list[dict]:
    r = requests.post(f"{shim.url}{route}", json={**body, "stream": True}, stream=True, timeout=60)
    assert r.status_code == 200, r.text
    return [json.loads(line) for line in r.iter_lines() if line]


# -- tool calls --------------------------------------------------------------------------------------------


def test_qwen_tool_calls_rest_streamed_and_not(shim, tmp_path):
    scripted(shim.server, tmp_path, "qwen", QWEN, TWO_CALLS)
    body = {"model": "qwen", "messages": ASK, "tools": [WEATHER, TIME]}
    whole = post(shim, "/api/chat", {**body, "stream": False}).json()
    message = whole["message"]
    assert calls_of(message) == CALLS
    assert [c["function"]["index"] for c in message["tool_calls"]] == [0, 1]
    assert all(c["id"].startswith("call_") for c in message["tool_calls"])
    assert message["content"].strip() == "Checking." and "<tool_call>" not in message["content"]
    assert whole["done_reason"] == "stop"

    lines = stream_lines(shim, "/api/chat", body)
    assert lines[-1]["done"] and lines[-1]["message"]["content"] == ""
    with_calls = [line for line in lines if line["message"].get("tool_calls")]
    assert with_calls and not any(line["done"] for line in with_calls)  # sent before the final line
    assert [c for line in lines for c in calls_of(line["message"])] == CALLS
    assert "".join(line["message"]["content"] for line in lines) == message["content"]


def test_without_tools_the_call_stays_text(shim, tmp_path):
    scripted(shim.server, tmp_path, "qwen", QWEN, TWO_CALLS)
    message = post(shim, "/api/chat", {"model": "qwen", "messages": ASK, "stream": False}).json()["message"]
    assert "tool_calls" not in message and message["content"] == "".join(TWO_CALLS)


@pytest.mark.parametrize("script", [
    ["<|python_tag|>", '{"name": "get_weather", "parameters": {"city": "Paris"}}'],
    ['{"name": "get_weather", ', '"parameters": {"city": "Paris"}}'],
])
def test_llama3_python_tag_and_bare_json(shim, tmp_path, script):
    scripted(shim.server, tmp_path, "llama3", LLAMA3, script)
    body = {"model": "llama3", "messages": ASK, "tools": [WEATHER]}
    message = post(shim, "/api/chat", {**body, "stream": False}).json()["message"]
    assert calls_of(message) == [("get_weather", {"city": "Paris"})] and message["content"] == ""
    lines = stream_lines(shim, "/api/chat", body)
    assert [c for line in lines for c in calls_of(line["message"])] == [("get_weather", {"city": "Paris"})]


def test_mistral_tool_calls_over_grpc(server, tmp_path):
    script = ["[TOOL_CALLS]", ' [{"name": "get_weather", "arguments": {"city": "Paris"}}, ',
              '{"name": "get_time", "arguments": {"zone": "UTC", "hours": 2}}]']
    scripted(server, tmp_path, "mistral", MISTRAL, script, trigger="[/INST]")
    req = pb.ChatRequest(model="mistral", messages=[pb.Message(role="user", content="weather?")],
                         tools=[dict_to_struct(WEATHER), dict_to_struct(TIME)])
    replies = list(server.stub.Chat(req))
    calls = [struct_to_dict(c) for r in replies for c in r.message.tool_calls]
    assert [(c["function"]["name"], c["function"]["arguments"]) for c in calls] == CALLS
    assert [c["function"]["index"] for c in calls] == [0, 1]
    assert "".join(r.message.content for r in replies) == ""
    assert replies[-1].done and replies[-1].done_reason == "stop"


def get_weather(city: str) -> str:
    """Get the current weather for a city.

    Args:
      city: The name of the city

    Returns:
      str: The weather
    """
    return f"sunny in {city}"


def test_ollama_client_with_a_python_function(shim, ollama_client, tmp_path):
    scripted(shim.server, tmp_path, "qwen", QWEN,
             ["<tool_call>", '\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n', "</tool_call>"])
    response = ollama_client.chat(model="qwen", messages=ASK, tools=[get_weather])
    (call,) = response.message.tool_calls
    assert call.function.name == "get_weather" and call.function.arguments == {"city": "Paris"}
    assert {"get_weather": get_weather}[call.function.name](**call.function.arguments) == "sunny in Paris"
    parts = list(ollama_client.chat(model="qwen", messages=ASK, tools=[get_weather, TIME], stream=True))
    streamed = [c for p in parts for c in p.message.tool_calls or []]
    assert [(c.function.name, c.function.arguments) for c in streamed] == [("get_weather", {"city": "Paris"})]
    # the result goes back as a "tool" message with tool_name, and the conversation goes on
    follow = ASK + [response.message, {"role": "tool", "content": "sunny in Paris", "tool_name": "get_weather"}]
    again = ollama_client.chat(model="qwen", messages=follow, tools=[get_weather])
    assert again.done and again.prompt_eval_count > response.prompt_eval_count


def test_tools_and_tool_results_render_in_the_prompt():
    call = {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
    messages = ASK + [{"role": "assistant", "content": "", "tool_calls": [call]},
                      {"role": "tool", "content": "sunny", "tool_name": "get_weather"}]
    prompt = render_prompt(QWEN, messages=messages, tools=[WEATHER])
    assert prompt == (
        "<|im_start|>system\n<tools>\n"
        '{"name":"get_weather","description":"Weather in a city","parameters":{"type":"object",'
        '"required":["city"],"properties":{"city":{"type":"string"}}}}\n</tools><|im_end|>\n'
        "<|im_start|>user\nweather in Paris?<|im_end|>\n"
        '<|im_start|>assistant\n<tool_call>\n{"name": "get_weather", "arguments": {"city":"Paris"}}\n'
        "</tool_call><|im_end|>\n"
        '<|im_start|>user\n<tool_response name="get_weather">\nsunny\n</tool_response><|im_end|>\n'
        "<|im_start|>assistant\n")


def test_tools_on_a_model_without_the_capability(shim, tmp_path):
    create_from_gguf(shim.server.stub, tmp_path, "plain", kind="llama")
    r = post(shim, "/api/chat", {"model": "plain", "messages": ASK, "tools": [WEATHER]})
    assert r.status_code == 400 and r.json() == {"error": "registry.ollama.ai/library/plain:latest does not support tools"}


# -- thinking ----------------------------------------------------------------------------------------------

THOUGHT = ["<think>", "\nThe user greets me.\n", "</think>", "\n\nHello there!"]


def test_thinking_chat_and_generate_streamed_and_not(shim, tmp_path):
    scripted(shim.server, tmp_path, "thinker", QWEN, THOUGHT)
    hi = [{"role": "user", "content": "hi"}]
    for think in (True, "high", None):  # unset: on, for a model that can think (as Ollama)
        body = {"model": "thinker", "messages": hi, "stream": False, **({} if think is None else {"think": think})}
        message = post(shim, "/api/chat", body).json()["message"]
        assert message["thinking"] == "The user greets me.\n" and message["content"] == "Hello there!"
    lines = stream_lines(shim, "/api/chat", {"model": "thinker", "messages": hi, "think": True})
    assert "".join(line["message"].get("thinking", "") for line in lines) == "The user greets me.\n"
    assert "".join(line["message"]["content"] for line in lines) == "Hello there!"
    first_answer = next(i for i, line in enumerate(lines) if line["message"]["content"])
    assert all(not line["message"].get("thinking") for line in lines[first_answer + 1:])  # reasoning first

    whole = post(shim, "/api/generate", {"model": "thinker", "prompt": "hi", "think": True, "stream": False}).json()
    assert whole["thinking"] == "The user greets me.\n" and whole["response"] == "Hello there!"
    lines = stream_lines(shim, "/api/generate", {"model": "thinker", "prompt": "hi", "think": "low"})
    assert "".join(line.get("thinking", "") for line in lines) == "The user greets me.\n"
    assert "".join(line["response"] for line in lines) == "Hello there!"


def test_think_false_renders_thinking_off_and_parses_nothing(shim, tmp_path):
    scripted(shim.server, tmp_path, "thinker", QWEN, THOUGHT)
    hi = [{"role": "user", "content": "hi"}]
    on = post(shim, "/api/chat", {"model": "thinker", "messages": hi, "think": True, "stream": False}).json()
    off = post(shim, "/api/chat", {"model": "thinker", "messages": hi, "think": False, "stream": False}).json()
    assert "thinking" not in off["message"] and off["message"]["content"] == "".join(THOUGHT)
    assert off["prompt_eval_count"] > on["prompt_eval_count"]  # the template closed an empty <think> block
    assert render_prompt(QWEN, messages=hi, think=False).endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")


def test_thinking_tag_opened_by_the_prompt(shim, ollama_client, tmp_path):
    scripted(shim.server, tmp_path, "opener", OPENS_THINK, ["Reasoning here.", "</think>", "\n\nAnswer."])
    r = ollama_client.chat(model="opener", messages=[{"role": "user", "content": "hi"}], think=True)
    assert r.message.thinking == "Reasoning here." and r.message.content == "Answer."
    r = ollama_client.generate(model="opener", prompt="hi", think=True)
    assert r.thinking == "Reasoning here." and r.response == "Answer."


def test_thinking_then_a_tool_call_over_grpc(server, tmp_path):
    scripted(server, tmp_path, "agent", QWEN, ["<think>", "I need the weather.", "</think>", "<tool_call>",
                                               '{"name": "get_weather", "arguments": {"city": "Oslo"}}',
                                               "</tool_call>"])
    req = pb.ChatRequest(model="agent", messages=[pb.Message(role="user", content="weather?")], think="true",
                         tools=[dict_to_struct(WEATHER)])
    replies = list(server.stub.Chat(req))
    assert "".join(r.message.thinking for r in replies) == "I need the weather."
    calls = [struct_to_dict(c) for r in replies for c in r.message.tool_calls]
    assert [c["function"]["arguments"] for c in calls] == [{"city": "Oslo"}]
    assert "".join(r.message.content for r in replies) == ""
    generated = list(server.stub.Generate(pb.GenerateRequest(model="agent", prompt="weather?", think="medium")))
    assert "".join(r.thinking for r in generated) == "I need the weather."


def test_think_on_a_model_without_the_capability(shim, ollama_client, tmp_path):
    create_from_gguf(shim.server.stub, tmp_path, "plain", kind="llama")
    for route, body in (("/api/chat", {"messages": ASK}), ("/api/generate", {"prompt": "hi"})):
        for think in (True, "medium"):
            r = post(shim, route, {"model": "plain", "think": think, **body})
            assert r.status_code == 400 and r.json() == {"error": '"plain" does not support thinking'}
    ok = post(shim, "/api/generate", {"model": "plain", "prompt": "hi", "think": False, "stream": False,
                                      "options": {"num_predict": 2}})
    assert ok.status_code == 200 and "thinking" not in ok.json()


def test_invalid_think_values(shim, tmp_path):
    scripted(shim.server, tmp_path, "thinker", QWEN, THOUGHT)
    levels = '(must be "high", "medium", "low", "max", true, or false)'
    for think, error in (("extreme", f'invalid think value: "extreme" {levels}'),
                         ("true", f'invalid think value: "true" {levels}'),
                         (1, 'think must be a boolean or string ("high", "medium", "low", "max", true, or false)')):
        r = post(shim, "/api/chat", {"model": "thinker", "messages": ASK, "think": think})
        assert r.status_code == 400 and r.json() == {"error": error}
    with pytest.raises(grpc.RpcError) as info:
        list(shim.server.stub.Generate(pb.GenerateRequest(model="thinker", prompt="hi", think="extreme")))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details() == f'invalid think value: "extreme" {levels}'
