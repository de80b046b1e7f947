"""Llama-style decoders: LlamaForCausalLM, MistralForCausalLM (both -> llama) and Qwen2ForCausalLM (-> qwen2).

Why these details (they follow llama.cpp's convert_hf_to_gguf.py, which defines what llama.cpp expects):
* llama/mistral: Hugging Face stores q_proj/k_proj rows in rotate-half order, llama.cpp's llama graph rotates
  interleaved pairs, so Q and K rows are permuted per head (K with the KV head count). Qwen2 uses NEOX-style
  rope in llama.cpp and is written as is.
* Tied embeddings: a checkpoint without lm_head.weight gets no output.weight; llama.cpp then reuses
  token_embd for the output projection.
* Rope: both config styles are read (transformers 5's `rope_parameters` and the older `rope_theta` /
  `rope_scaling`); linear and YaRN scaling become GGUF keys, llama3 scaling becomes the rope_freqs tensor.
* A sentence-transformers folder (modules.json + 1_Pooling/config.json) sets <arch>.pooling_type.
"""

from __future__ import annotations

import json
import math

import gguf
import numpy as np

from corral.service.convert.base import Converter, Plan
from corral.service.convert.vocab import add_vocab


def rope_parameters(hp: dict) -> tuple[dict, dict]:
    """(full-attention rope params, sliding-attention rope params), whichever config style is used."""
    rp = hp.get("rope_parameters")
    if isinstance(rp, dict) and rp:
        if "full_attention" in rp or "sliding_attention" in rp:
            return rp.get("full_attention", {}), rp.get("sliding_attention", {})
        return rp, {}
    full = dict(hp.get("rope_scaling") or {})
    if "type" in full and "rope_type" not in full:
        full["rope_type"] = full["type"]
    if hp.get("rope_theta") is not None:
        full["rope_theta"] = hp["rope_theta"]
    swa = {"rope_theta": hp["rope_local_base_freq"]} if hp.get("rope_local_base_freq") else {}
    return full, swa


def write_rope(w: gguf.GGUFWriter, hp: dict, default_theta: float | None = None) -> None:
    full, swa = rope_parameters(hp)
    theta = full.get("rope_theta", default_theta)
    if theta is not None:
        w.add_rope_freq_base(float(theta))
    if swa.get("rope_theta") is not None:
        w.add_rope_freq_base_swa(float(swa["rope_theta"]))
    kind, factor = (full.get("rope_type") or "").lower(), full.get("factor")
    if kind == "linear" and factor:
        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(float(factor))
    elif kind == "yarn" and factor:
        w.add_rope_scaling_type(gguf.RopeScalingType.YARN)
        w.add_rope_scaling_factor(float(factor))
        if full.get("original_max_position_embeddings"):
            w.add_rope_scaling_orig_ctx_len(int(full["original_max_position_embeddings"]))


def write_pooling(w: gguf.GGUFWriter, model_dir) -> None:
    """sentence-transformers pooling (modules.json -> <path>/config.json), as llama.cpp's converter does."""
    modules = model_dir / "modules.json"
    if not modules.is_file():
        return
    for mod in json.loads(modules.read_text(encoding="utf-8")):
        if str(mod.get("type", "")).endswith("Pooling"):
            cfg_path = model_dir / mod.get("path", "") / "config.json"
            cfg = json.loads(cfg_path.read_text(encoding="utf-8")) if cfg_path.is_file() else {}
            if cfg.get("pooling_mode_cls_token") or cfg.get("pooling_mode") == "cls":
                w.add_pooling_type(gguf.PoolingType.CLS)
            elif cfg.get("pooling_mode_lasttoken") or cfg.get("pooling_mode") == "lasttoken":
                w.add_pooling_type(gguf.PoolingType.LAST)
            else:  # mean is sentence-transformers' default
                w.add_pooling_type(gguf.PoolingType.MEAN)
            return


def permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """Rotate-half row order -> interleaved pairs, per head (llama.cpp's LlamaModel.permute)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


_QK = ("q_proj.weight", "q_proj.bias", "k_proj.weight", "k_proj.bias")


class LlamaConverter(Converter):
    arch = gguf.MODEL_ARCH.LLAMA
    permute_qk = True

    def head_dim(self) -> int:
        return int(self.hp.get("head_dim") or self.hp["hidden_size"] // self.hp["num_attention_heads"])

    def write_vocab(self, w):
        self.n_vocab = add_vocab(w, self.dir, self.hp)

    def write_params(self, w):
        hp = self.hp
        n_head = int(hp["num_attention_heads"])
        w.add_context_length(int(hp.get("max_position_embeddings", 4096)))
        w.add_embedding_length(int(hp["hidden_size"]))
        w.add_block_count(self.n_layer)
        w.add_feed_forward_length(int(hp["intermediate_size"]))
        w.add_head_count(n_head)
        w.add_head_count_kv(int(hp.get("num_key_value_heads") or n_head))
        w.add_layer_norm_rms_eps(float(hp.get("rms_norm_eps", 1e-6)))
        w.add_vocab_size(self.n_vocab)
        w.add_rope_dimension_count(self.head_dim())
        if hp.get("head_dim"):
            w.add_key_length(int(hp["head_dim"]))
            w.add_value_length(int(hp["head_dim"]))
        write_rope(w, hp, 10000.0)
        write_pooling(w, self.dir)

    def hf_name(self, name):
        name = super().hf_name(name)
        if name is None or name.startswith(("vision_tower.", "multi_modal_projector.", "model.vision_tower.",
                                            "model.multi_modal_projector.")):
            return None
        for wrapper, repl in (("language_model.model.", "model."), ("model.language_model.", "model."),
                              ("language_model.lm_head.", "lm_head.")):
            if name.startswith(wrapper):
                return repl + name[len(wrapper):]
        return name

    def out_shape(self, hf, out, shape):
        if out.startswith(("token_embd.", "output.weight")):
            return self.vocab_rows(hf, shape)
        return shape

    def row_safe(self, hf, out):
        return not (self.permute_qk and hf.endswith(_QK))

    def transform(self, hf, out, data):
        if self.permute_qk and hf.endswith(("q_proj.weight", "q_proj.bias")):
            data = permute(data, int(self.hp["num_attention_heads"]))
        elif self.permute_qk and hf.endswith(("k_proj.weight", "k_proj.bias")):
            hp = self.hp
            data = permute(data, int(hp.get("num_key_value_heads") or hp["num_attention_heads"]))
        return data

    def extra_plans(self):
        full, _ = rope_parameters(self.hp)
        if (full.get("rope_type") or "").lower() != "llama3":
            return []
        factors = llama3_rope_factors(full, self.head_dim())
        return [Plan("rope_freqs.weight", factors.shape, np.float32, lambda start, stop: factors[start:stop])]


def llama3_rope_factors(rp: dict, dim: int) -> np.ndarray:
    """Per-frequency divisors for llama3 rope scaling (llama.cpp reads them from rope_freqs.weight)."""
    base = float(rp.get("rope_theta", 500000.0))
    factor = float(rp.get("factor", 8.0))
    low, high = float(rp.get("low_freq_factor", 1.0)), float(rp.get("high_freq_factor", 4.0))
    old_ctx = float(rp.get("original_max_position_embeddings", 8192))
    out = []
    for freq in 1.0 / (base ** (np.arange(0, dim, 2, dtype=np.float32) / dim)):
        wavelen = 2 * math.pi / freq
        if wavelen < old_ctx / high:
            out.append(1.0)
        elif wavelen > old_ctx / low:
            out.append(factor)
        else:
            smooth = (old_ctx / wavelen - low) / (high - low)
            out.append(1 / ((1 - smooth) / factor + smooth))
    return np.asarray(out, dtype=np.float32)


class Qwen2Converter(LlamaConverter):
    arch = gguf.MODEL_ARCH.QWEN2
    permute_qk = False
