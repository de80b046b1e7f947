"""The thinking parser: reasoning and answer separated in every split of the output, a tag opened by the
prompt, outputs without reasoning, and the output layer that chains thinking, tool calls and logprobs."""

import pytest

from corral.service.engine.output import Output, default_think, template_think
from corral.service.prompt.thinking import ThinkingParser
from corral.service.prompt.tools import ToolCallParser


def run(text: str, step: int, prompt: str = "", tags=("<think>", "</think>")):
    parser = ThinkingParser(*tags)
    parser.opened_in(prompt)
    thinking, content = [], []
    for i in range(0, len(text), step):
        t, c = parser.add(text[i : i + step])
        thinking.append(t)
        content.append(c)
    t, c = parser.finish()
    return "".join(thinking) + t, "".join(content) + c


@pytest.mark.parametrize("step", [1, 2, 7, 10_000])
@pytest.mark.parametrize("text, prompt, expected", [
    ("<think>\nLet me see.\n</think>\n\nParis.", "", ("Let me see.\n", "Paris.")),
    ("  <think>a < b </thi</think>ok", "", ("a < b </thi", "ok")),
    ("Let me see.</think>\n\nParis.", "<|im_start|>assistant\n<think>\n", ("Let me see.", "Paris.")),
    ("Just an answer with <think> inside", "", ("", "Just an answer with <think> inside")),
    ("\n\nAnswer", "", ("", "\n\nAnswer")),  # no reasoning: whitespace of the answer is kept
    ("<think>unfinished thought</thi", "", ("unfinished thought</thi", "")),
    ("<think></think>", "", ("", "")),
])
def test_reasoning_and_answer_in_every_split(text, prompt, expected, step):
    assert run(text, step, prompt) == expected


def test_other_tags():
    assert run("<|thought|>hmm<|/thought|>yes", 3, tags=("<|thought|>", "<|/thought|>")) == ("hmm", "yes")


def test_reasoning_streams_before_the_closing_tag():
    parser = ThinkingParser("<think>", "</think>")
    assert parser.add("<thi") == ("", "")
    assert parser.add("nk>one ") == ("one ", "")
    assert parser.add("two </") == ("two ", "")
    assert parser.add("think> three") == ("", "three")


def test_think_values():
    assert default_think("", ["completion", "thinking"]) == "true"
    assert default_think("", ["completion"]) == ""
    assert default_think("false", ["thinking"]) == "false"
    assert [template_think(v) for v in ("", "true", "false", "high")] == [None, True, False, "high"]


def test_output_chains_thinking_tools_and_logprobs():
    tools = [{"type": "function", "function": {"name": "f"}}]
    out = Output("content", ThinkingParser("<think>", "</think>"), ToolCallParser(tools, "<tool_call>"))
    lp = [{"token": "x", "logprob": -0.5, "bytes": b"x"}]
    chunks = [out.feed({"text": "<think>plan", "logprobs": lp}), out.feed("</think>Calling <tool_"),
              out.feed('call>{"name": "f", "arguments": {"a": 1}}</tool_call>'), out.feed("<tool"), out.finish()]
    assert chunks[0] == {"content": "", "done": False, "thinking": "plan", "logprobs": lp}
    assert chunks[1] == {"content": "Calling ", "done": False}
    assert chunks[2]["tool_calls"][0]["function"] == {"index": 0, "name": "f", "arguments": {"a": 1}}
    assert chunks[3] is None  # held back: maybe a tag
    assert chunks[4] == {"content": "<tool", "done": False}


def test_output_for_request_picks_parsers_from_the_template():
    template = ("{{ range .Messages }}{{ if .Thinking }}<think>{{ .Thinking }}</think>{{ end }}{{ .Content }}"
                "{{ if .ToolCalls }}<tool_call>{{ range .ToolCalls }}{{ json .Function }}{{ end }}</tool_call>"
                "{{ end }}{{ end }}")
    out = Output.for_request("content", template, "prompt <think>\n", "true", [{"function": {"name": "f"}}])
    assert out.thinking is not None and out.thinking.state != 0  # the prompt opened the tag
    assert out.tools is not None and out.tools.tags[0] == "<tool_call>"
    off = Output.for_request("content", template, "prompt", "false", None)
    assert off.thinking is None and off.tools is None
