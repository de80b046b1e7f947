"""Long conversations over REST with the official ollama client: a chat of about 3x num_ctx tokens is
answered from the system message plus the most recent whole turns that fit (Ollama's chat truncation),
reports the truncated prompt's token count, and truncate=false refuses it with Ollama's 400; generation
past num_ctx shifts the context (continues to num_predict) unless shift=false (done_reason "length").
"""

import pytest
import requests

from corral.protos.ollama.v1 import ollama_pb2 as pb
from tests.gguf_models import write_llama_gguf
from tests.models_helpers import upload

CHATML = ("{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}"
          "<|im_start|>assistant\n")
NUM_CTX = 256
OPTS = {"temperature": 0, "num_predict": 4, "num_ctx": NUM_CTX}
SYSTEM = {"role": "system", "content": "You are a helpful model."}
WORDS = "the sky is blue and the sun is red and the moon is green".split()


def turn(i: int) -> list[dict]:
    text = " ".join(WORDS[(i + k) % len(WORDS)] for k in range(24))
    return [{"role": "user", "content": f"question {i}: {text}"}, {"role": "assistant", "content": f"answer {text}"}]


@pytest.fixture
def model(server, tmp_path):
    req = pb.CreateRequest(model="chat", template=CHATML)
    req.files["model.gguf"] = upload(server.stub, write_llama_gguf(tmp_path / "chat.gguf", n_ctx=4096))
    list(server.stub.Create(req))
    return server


def test_chat_of_three_contexts_keeps_system_and_recent_turns(model, ollama_client):
    turns = [turn(i) for i in range(12)]
    history = [m for t in turns for m in t]
    last = {"role": "user", "content": "why is the sky blue"}
    counts = {}
    for k in range(len(turns) + 1):  # the prompt of system + the last k turns + the question, measured alone
        msgs = [SYSTEM] + [m for t in turns[len(turns) - k:] for m in t] + [last]
        r = ollama_client.chat(model="chat", messages=msgs, options=dict(OPTS, num_ctx=4 * NUM_CTX))
        counts[k] = r.prompt_eval_count
    assert counts[len(turns)] > 3 * NUM_CTX  # the whole conversation is about three contexts long
    fits = max(k for k, n in counts.items() if n < NUM_CTX)
    assert 0 < fits < len(turns)

    r = ollama_client.chat(model="chat", messages=[SYSTEM, *history, last], options=OPTS)
    assert r.done and r.message.content  # answered
    assert r.prompt_eval_count == counts[fits] < NUM_CTX  # the truncated prompt's count
    kept = [SYSTEM] + [m for t in turns[len(turns) - fits:] for m in t] + [last]
    same = ollama_client.chat(model="chat", messages=kept, options=OPTS)
    assert same.message.content == r.message.content and same.prompt_eval_count == r.prompt_eval_count
    # without the system message the count would differ: it was kept
    no_system = ollama_client.chat(model="chat", messages=kept[1:], options=OPTS)
    assert no_system.prompt_eval_count < r.prompt_eval_count


def test_truncate_false_with_an_oversized_chat_is_400(model, shim):
    msgs = [SYSTEM] + [m for i in range(12) for m in turn(i)] + [{"role": "user", "content": "hi"}]
    r = requests.post(shim.url + "/api/chat", json={"model": "chat", "messages": msgs, "truncate": False,
                                                    "options": OPTS, "stream": False}, timeout=60)
    assert r.status_code == 400 and r.json() == {"error": "the input length exceeds the context length"}
    r = requests.post(shim.url + "/api/generate", json={"model": "chat", "prompt": "hello " * (2 * NUM_CTX),
                                                        "truncate": False, "options": OPTS}, timeout=60)
    assert r.status_code == 400 and r.json() == {"error": "the input length exceeds the context length"}


def test_generation_past_the_context_shifts_unless_shift_false(model, shim, ollama_client):
    opts = {"temperature": 1.0, "seed": 3, "repeat_penalty": 3.0, "repeat_last_n": -1, "num_ctx": 64,
            "num_predict": 200}
    r = ollama_client.generate(model="chat", prompt="hello world", options=opts)
    assert r.done_reason == "length" and r.eval_count == 200  # went on past 64 tokens of context
    body = {"model": "chat", "prompt": "hello world", "options": opts, "shift": False, "stream": False}
    stopped = requests.post(shim.url + "/api/generate", json=body, timeout=60).json()
    assert stopped["done_reason"] == "length" and stopped["prompt_eval_count"] + stopped["eval_count"] <= 65
    assert r.response.startswith(stopped["response"])
    chat = requests.post(shim.url + "/api/chat", json={"model": "chat", "messages": [
        {"role": "user", "content": "hello"}], "options": opts, "shift": False, "stream": False}, timeout=60).json()
    assert chat["done_reason"] == "length" and chat["eval_count"] < 64
