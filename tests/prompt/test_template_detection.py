"""Chat templates from the GGUF: a model created from a GGUF (written here, carrying a Hugging Face
`tokenizer.chat_template`) without a TEMPLATE gets the closest known family's Go template and stop
parameters, as Ollama's template autodetection; an unknown template gets no template layer and chat
renders the GGUF's own Jinja template. Real gRPC server, real store, real llama.cpp for the chats.
"""

import json
from pathlib import Path

import pytest

from corral.protos.ollama.v1 import ollama_pb2 as pb
from corral.service.prompt import known, prompts
from corral.service.prompt.templates import render_prompt
from tests.gguf_models import write_llama_gguf
from tests.models_helpers import upload

INDEX = json.loads((Path(known.__file__).parent / "index.json").read_text(encoding="utf-8"))
# Each reference template as a file from the wild would differ slightly: whitespace and a literal edited.
CASES = [(e["name"], e["template"].replace("%}{%", "%}\n{%", 2) + "\n") for e in INDEX]
# A family none of the known ones resembles (Ollama's rule: 100 edits or more from every reference).
UNKNOWN = ("{%- set ns = namespace(turns=0) -%}{% for m in messages %}{%- if m['role'] == 'user' -%}"
           "{%- set ns.turns = ns.turns + 1 -%}{%- endif -%}[{{ m['role'] | upper }}] {{ m['content'] }}\n"
           "{% endfor %}{% if add_generation_prompt %}[ANSWER]{% endif %}")
CONVO = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello"},
         {"role": "assistant", "content": "hi"}, {"role": "user", "content": "why is the sky blue"}]


def create(stub, tmp_path, name: str, chat_template: str, special_tokens=(), **fields) -> list[str]:
    path = write_llama_gguf(tmp_path / f"{name}.gguf", chat_template=chat_template, n_ctx=4096,
                            special_tokens=special_tokens)
    req = pb.CreateRequest(model=name, **fields)
    req.files["model.gguf"] = upload(stub, path)
    return [p.status for p in stub.Create(req)]


def test_every_reference_matches_its_family():
    for name, jinja in CASES:
        found = known.named(jinja)
        assert found is not None and found.name == name
        assert found.parameters["stop"] and found.template == (Path(known.__file__).parent /
                                                               f"{name}.gotmpl").read_text(encoding="utf-8")


def test_distance_is_levenshtein():
    assert known.distance("kitten", "sitting") == 3
    assert known.distance("", "abc") == 3 and known.distance("flaw", "lawn") == 2
    assert known.distance("a" * 300, "b" * 300, limit=100) >= 100
    assert known.named(UNKNOWN) is None and known.named("") is None


@pytest.mark.parametrize("name,jinja", CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CASES)])
def test_create_detects_the_template(server, tmp_path, name, jinja):
    statuses = create(server.stub, tmp_path, "m", jinja)
    assert f"using autodetected template {name}" in statuses and statuses[-1] == "success"
    shown = server.stub.Show(pb.ShowRequest(model="m"))
    family = known.load(name)
    assert shown.template == family.template
    stops = [line.split(None, 1)[1] for line in shown.parameters.splitlines()]
    assert stops == [json.dumps(s, ensure_ascii=False) for s in family.parameters["stop"]]
    assert "TEMPLATE " in shown.modelfile and "PARAMETER stop" in shown.modelfile


def test_request_template_and_parameters_win(server, tmp_path):
    chatml = CASES[0][1]
    statuses = create(server.stub, tmp_path, "own", chatml, template="{{ .Prompt }}!")
    assert not any("autodetected" in s for s in statuses)
    assert server.stub.Show(pb.ShowRequest(model="own")).template == "{{ .Prompt }}!"
    req_params = pb.CreateRequest().parameters
    req_params.update({"stop": ["END"], "temperature": 0.5})
    statuses = create(server.stub, tmp_path, "params", chatml, parameters=req_params)
    assert "using autodetected template chatml" in statuses
    params = server.stub.Show(pb.ShowRequest(model="params")).parameters
    assert '"END"' in params and "<|im_end|>" not in params and "temperature" in params


def test_unknown_template_is_rendered_with_jinja(server, tmp_path, ollama_client):
    statuses = create(server.stub, tmp_path, "unknown", UNKNOWN)
    assert not any("autodetected" in s for s in statuses)
    shown = server.stub.Show(pb.ShowRequest(model="unknown"))
    assert shown.template == "{{ .Prompt }}"  # no template layer
    spec = server.store.model_spec("unknown")
    text = prompts.render(spec, prompts.chat_messages(spec, CONVO))
    assert text == "[SYSTEM] Be brief.\n[USER] hello\n[ASSISTANT] hi\n[USER] why is the sky blue\n[ANSWER]"
    opts = {"temperature": 0, "num_predict": 4, "num_ctx": 1024}
    chat = ollama_client.chat(model="unknown", messages=CONVO, options=opts)
    raw = ollama_client.generate(model="unknown", prompt=text, raw=True, options=opts)
    assert chat.prompt_eval_count == raw.prompt_eval_count and chat.message.content == raw.response


def test_detected_template_renders_the_exact_prompt(server, tmp_path, ollama_client):
    """The prompt a detected llama3 model sees, to the character, and that chat uses it (its token count
    equals the count of that exact text sent raw)."""
    llama3 = next(j for n, j in CASES if n == "llama3-instruct")
    create(server.stub, tmp_path, "l3", llama3,
           special_tokens=("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"))
    text = render_prompt(known.load("llama3-instruct").template, messages=CONVO)
    assert text == ("<|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
                    "<|start_header_id|>user<|end_header_id|>\n\nhello<|eot_id|>"
                    "<|start_header_id|>assistant<|end_header_id|>\n\nhi<|eot_id|>"
                    "<|start_header_id|>user<|end_header_id|>\n\nwhy is the sky blue<|eot_id|>"
                    "<|start_header_id|>assistant<|end_header_id|>\n\n")
    opts = {"temperature": 0, "num_predict": 4, "num_ctx": 1024}
    chat = ollama_client.chat(model="l3", messages=CONVO, options=opts)
    raw = ollama_client.generate(model="l3", prompt=text, raw=True, options=opts)
    assert chat.prompt_eval_count == raw.prompt_eval_count < len(text) // 3  # header tokens are single tokens
    assert chat.message.content == raw.response


def test_exact_prompts_of_known_families():
    msgs = CONVO
    assert render_prompt(known.load("chatml").template, messages=msgs) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nhello<|im_end|>\n"
        "<|im_start|>assistant\nhi<|im_end|>\n<|im_start|>user\nwhy is the sky blue<|im_end|>\n"
        "<|im_start|>assistant\n")
    assert render_prompt(known.load("llama2-chat").template, messages=msgs) == (
        "[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nhello [/INST] hi </s><s>[INST] why is the sky blue [/INST]")
    assert render_prompt(known.load("gemma-instruct").template, messages=msgs) == (
        "<start_of_turn>user\nBe brief.\n\nhello<end_of_turn>\n<start_of_turn>model\nhi<end_of_turn>\n"
        "<start_of_turn>user\nwhy is the sky blue<end_of_turn>\n<start_of_turn>model\n")
    assert render_prompt(known.load("mistral-instruct").template, messages=msgs) == (
        "[INST] hello[/INST] hi</s>[INST] Be brief.\n\nwhy is the sky blue[/INST]")
