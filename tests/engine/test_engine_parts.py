"""Pure parts of the engine: option merging and typing, load options, env settings, normalisation,
prompt assembly (Go templates and the GGUF Jinja fallback) and GGUF validation before loading.

Why: these rules are Ollama's and easy to get subtly wrong (a Struct turns 4096 into 4096.0, num_ctx is
capped at the trained context, dimensions cut before re-normalising, a truncated model must never reach
llama.cpp), and each is checked here in milliseconds.
"""

import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from corral.service.engine import options as o  # noqa: E402
from corral.service.engine.engine import kv_cache_bytes, normalize  # noqa: E402
from corral.service.engine.validate import check_model  # noqa: E402
from corral.service.prompt import prompts  # noqa: E402
from corral.store.config import EngineConfig  # noqa: E402
from corral.store.errors import Internal, InvalidArgument  # noqa: E402
from corral.store.gguf_info import read_gguf  # noqa: E402
from corral.store.gocompat import parse_go_duration as go_duration  # noqa: E402
from tests.gguf_models import write_bert_gguf, write_llama_gguf  # noqa: E402


def test_merge_layers_and_types():
    merged = o.merge({"temperature": 0.2, "stop": ["<|end|>"], "num_ctx": 1024}, {"num_ctx": 2048.0, "top_k": 5.0,
                                                                                "bogus": 1, "mirostat": 1})
    assert merged["temperature"] == 0.2 and merged["num_ctx"] == 2048 and isinstance(merged["num_ctx"], int)
    assert merged["top_k"] == 5 and merged["stop"] == ["<|end|>"] and "bogus" not in merged
    assert merged["repeat_penalty"] == 1.1 and merged["seed"] == -1
    assert o.merge(None, {"stop": "x"})["stop"] == ["x"]


@pytest.mark.parametrize("key,value,text", [
    ("num_ctx", "big", 'option "num_ctx" must be of type integer'),
    ("temperature", True, 'option "temperature" must be of type float32'),
    ("use_mmap", 1, 'option "use_mmap" must be of type boolean'),
    ("stop", [1], 'option "stop" must be of type array of strings'),
])
def test_wrong_option_types(key, value, text):
    with pytest.raises(InvalidArgument) as err:
        o.merge(None, {key: value})
    assert err.value.message == text


def test_load_options_cap_context_and_threads():
    load = o.load_options(o.merge(None, None, 4096), model_context=128, threads=None)
    assert load["num_ctx"] == 128 and load["num_batch"] == 128 and load["num_thread"] >= 1
    assert o.load_options(o.merge(None, {"num_thread": 3}), 4096)["num_thread"] == 3


def test_env_config(monkeypatch):
    assert go_duration("1h30m") == 5400 and go_duration("-1s") == -1 and go_duration("0") == 0
    monkeypatch.setenv("OLLAMA_KEEP_ALIVE", "'10m'")
    monkeypatch.setenv("OLLAMA_MAX_LOADED_MODELS", "0")
    monkeypatch.setenv("OLLAMA_MAX_QUEUE", "7")
    cfg = EngineConfig.from_env()
    assert cfg.keep_alive == 600 and cfg.max_loaded_models == 3 and cfg.max_queue == 7 and cfg.num_parallel == 1
    monkeypatch.setenv("OLLAMA_KEEP_ALIVE", "-1")
    assert EngineConfig.from_env().keep_alive is None
    monkeypatch.setenv("OLLAMA_KEEP_ALIVE", "120")
    assert EngineConfig.from_env().keep_alive == 120


def test_normalize_and_dimensions():
    v = np.array([[3.0, 4.0, 12.0], [0.0, 0.0, 0.0]], dtype=np.float32)
    n = normalize(v)
    assert n.dtype == np.float32 and np.allclose(np.linalg.norm(n[0]), 1) and not n[1].any()
    cut = normalize(v, dimensions=2)
    assert cut.shape == (2, 2) and np.allclose(cut[0], [0.6, 0.8])
    assert normalize(v, dimensions=5).shape == (2, 3)


def spec_for(path, template=None, system="", messages=()):
    return SimpleNamespace(template=template, system=system, messages=list(messages), gguf=read_gguf(path),
                           projector_paths=[], details={})


def test_generate_prompt_rules(tmp_path):
    spec = spec_for(write_llama_gguf(tmp_path / "m.gguf"), template="{{ .System }}|{{ .Prompt }}",
                    system="be brief", messages=[{"role": "user", "content": "seed"}])
    msgs = prompts.generate_messages(spec, "hi", None, has_context=False)
    assert msgs[0] == {"role": "system", "content": "be brief"} and msgs[-1]["content"] == "hi"
    assert prompts.generate_messages(spec, "hi", "own", True) == [
        {"role": "system", "content": "own"}, {"role": "user", "content": "hi"}]
    assert prompts.render(spec, [{"role": "user", "content": "hi"}]) == "|hi"
    assert prompts.render(spec, [{"role": "user", "content": "hi"}], template="<{{ .Prompt }}>") == "<hi>"


def test_chat_messages_system_rule(tmp_path):
    spec = spec_for(write_llama_gguf(tmp_path / "m.gguf"), system="S", messages=[{"role": "user", "content": "m"}])
    assert [m["role"] for m in prompts.chat_messages(spec, [{"role": "user", "content": "q"}])] == \
        ["system", "user", "user"]
    own = prompts.chat_messages(spec, [{"role": "system", "content": "mine"}, {"role": "user", "content": "q"}])
    assert own[0] == {"role": "user", "content": "m"}  # the model's MESSAGEs first, and no model system
    assert all(m["content"] != "S" for m in own)


def test_jinja_fallback(tmp_path):
    tpl = ("{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}{{ eos_token }}{% endfor %}"
           "{% if add_generation_prompt %}<|assistant|>{% endif %}")
    spec = spec_for(write_llama_gguf(tmp_path / "m.gguf", chat_template=tpl))
    text = prompts.render(spec, [{"role": "user", "content": "hi"}])
    assert text == "<s><|user|>hi</s><|assistant|>"
    assert prompts.bos_in_text(spec, text)
    bad = spec_for(write_llama_gguf(tmp_path / "b.gguf", chat_template="{{ raise_exception('no system') }}"))
    with pytest.raises(InvalidArgument) as err:
        prompts.render(bad, [{"role": "user", "content": "hi"}])
    assert err.value.message == "template error: no system"


def test_default_template_without_any(tmp_path):
    spec = spec_for(write_bert_gguf(tmp_path / "e.gguf"))
    assert prompts.render(spec, [{"role": "user", "content": "plain"}]) == "plain"


def test_truncated_model_is_rejected(tmp_path):
    path = write_llama_gguf(tmp_path / "m.gguf")
    info = check_model(path)
    assert info.architecture == "llama"
    data = path.read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(Internal) as err:
        check_model(cut)
    assert "truncated" in err.value.message
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"GGUF" + b"\xff" * 64)
    with pytest.raises(Internal):
        check_model(junk)


def test_kv_cache_estimate(tmp_path):
    spec = spec_for(write_llama_gguf(tmp_path / "m.gguf"))
    assert kv_cache_bytes(spec, 256) == 2 * 2 * 256 * 2 * 64
