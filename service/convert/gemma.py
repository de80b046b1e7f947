"""Gemma family: GemmaForCausalLM (gemma), Gemma2ForCausalLM (gemma2), Gemma3ForCausalLM and the text part of
Gemma3ForConditionalGeneration (gemma3).

Why these details (from llama.cpp's converter and model code):
* Gemma's RMSNorm multiplies by (1 + weight); llama.cpp's multiplies by weight, so every *norm.weight gets +1
  (for Gemma 3 that includes the per-head q_norm/k_norm).
* Gemma and Gemma 2 always tie the output projection to the embeddings (llama.cpp has no output tensor for
  them), so lm_head.weight is dropped; Gemma 3 keeps a distinct one if a checkpoint has it.
* Gemma 2/3 alternate sliding-window and global layers. The config's `layer_types` (transformers 5) is
  written as the per-layer sliding_window_pattern array, so llama.cpp does not fall back to its built-in
  pattern; Gemma 3's local layers use their own rope base (rope_freq_base_swa).
* llama.cpp scales queries by 1/sqrt(head_dim) (1/sqrt(n_embd/n_head) for the 27B sizes); the configs'
  query_pre_attn_scalar agrees for the released models.
* Vision tower and projector tensors are skipped: this converter writes the text model only.
"""

from __future__ import annotations

import gguf

from corral.service.convert.decoder import LlamaConverter, write_rope
from corral.service.convert.vocab import add_vocab


class GemmaConverter(LlamaConverter):
    arch = gguf.MODEL_ARCH.GEMMA
    permute_qk = False

    def write_vocab(self, w):
        # Gemma never adds a dummy prefix to SentencePiece input (llama.cpp's converter forces it off).
        self.n_vocab = add_vocab(w, self.dir, self.hp, space_prefix=False)

    def head_dim(self) -> int:
        return int(self.hp.get("head_dim") or 256)

    def write_params(self, w):
        hp = self.hp
        n_head = int(hp.get("num_attention_heads", 8))
        w.add_context_length(int(hp.get("max_position_embeddings", 8192)))
        w.add_embedding_length(int(hp["hidden_size"]))
        w.add_block_count(self.n_layer)
        w.add_feed_forward_length(int(hp["intermediate_size"]))
        w.add_head_count(n_head)
        w.add_head_count_kv(int(hp.get("num_key_value_heads") or n_head))
        w.add_layer_norm_rms_eps(float(hp.get("rms_norm_eps", 1e-6)))
        w.add_key_length(self.head_dim())
        w.add_value_length(self.head_dim())
        write_rope(w, hp, 10000.0)
        self.write_gemma_params(w)

    def write_gemma_params(self, w):
        pass

    keep_lm_head = False

    def hf_name(self, name):
        name = super().hf_name(name)
        return None if name is None or (name == "lm_head.weight" and not self.keep_lm_head) else name

    def transform(self, hf, out, data):
        data = super().transform(hf, out, data)
        if hf.endswith("norm.weight"):
            data = data + 1.0
        return data

    def write_swa_pattern(self, w) -> bool:
        """Writes layer_types as the per-layer pattern; False if the config has none."""
        types = self.hp.get("layer_types")
        if not isinstance(types, list) or len(types) != self.n_layer:
            return False
        w.add_sliding_window_pattern([t == "sliding_attention" for t in types])
        return True


class Gemma2Converter(GemmaConverter):
    arch = gguf.MODEL_ARCH.GEMMA2

    def write_gemma_params(self, w):
        hp = self.hp
        if hp.get("attn_logit_softcapping") is not None:
            w.add_attn_logit_softcapping(float(hp["attn_logit_softcapping"]))
        if hp.get("final_logit_softcapping") is not None:
            w.add_final_logit_softcapping(float(hp["final_logit_softcapping"]))
        if hp.get("sliding_window"):
            w.add_sliding_window(int(hp["sliding_window"]))
        self.write_swa_pattern(w)


class Gemma3Converter(GemmaConverter):
    arch = gguf.MODEL_ARCH.GEMMA3
    keep_lm_head = True

    def write_params(self, w):
        if "rope_theta" not in self.hp and "rope_parameters" not in self.hp:
            self.hp = {**self.hp, "rope_theta": 1_000_000.0}  # Gemma 3's global-layer default
        super().write_params(w)

    def write_gemma_params(self, w):
        hp = self.hp
        if hp.get("final_logit_softcapping"):
            w.add_final_logit_softcapping(float(hp["final_logit_softcapping"]))
        types = hp.get("layer_types")
        sliding = any(t == "sliding_attention" for t in types) if isinstance(types, list) else \
            hp.get("sliding_window_pattern") != 1
        if sliding and hp.get("sliding_window"):
            w.add_sliding_window(int(hp["sliding_window"]))
            if not self.write_swa_pattern(w) and hp.get("sliding_window_pattern"):
                w.add_sliding_window_pattern(int(hp["sliding_window_pattern"]))
