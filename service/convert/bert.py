"""BERT encoders (BertModel, BertForMaskedLM, sentence-transformers BERT such as all-MiniLM) -> llama.cpp bert.

Why these details (llama.cpp's converter and the measured facts in the project notes):
* Embedding-only: the pooler and masked-LM / next-sentence heads are dropped; `bert.` prefixes and the old
  LayerNorm gamma/beta names are normalised first.
* Non-causal attention, layer_norm_eps, token_type_count, and the pooling type from the sentence-transformers
  module folder (1_Pooling/config.json via modules.json); a bare BertModel without one gets CLS pooling,
  as llama.cpp's BERT default.
* position_embd and token_types stay F32: an F16 token_types tensor aborts llama.cpp.
* The WordPiece vocabulary is written in llama.cpp's phantom-space form (service/convert/vocab.py).
"""

from __future__ import annotations

import gguf

from corral.service.convert.base import Converter
from corral.service.convert.decoder import write_pooling
from corral.service.convert.vocab import add_vocab

_DROP_PREFIXES = ("pooler.", "cls.predictions", "cls.seq_relationship")


class BertConverter(Converter):
    arch = gguf.MODEL_ARCH.BERT
    keep_f32 = ("position_embd.", "token_types.")

    def write_vocab(self, w):
        self.n_vocab = add_vocab(w, self.dir, self.hp, bert=True)

    def write_params(self, w):
        hp = self.hp
        w.add_context_length(int(hp.get("max_position_embeddings", 512)))
        w.add_embedding_length(int(hp["hidden_size"]))
        w.add_block_count(self.n_layer)
        w.add_feed_forward_length(int(hp["intermediate_size"]))
        w.add_head_count(int(hp["num_attention_heads"]))
        w.add_layer_norm_eps(float(hp.get("layer_norm_eps", 1e-12)))
        w.add_causal_attention(False)
        if (self.dir / "modules.json").is_file():
            write_pooling(w, self.dir)
        else:
            w.add_pooling_type(gguf.PoolingType.CLS)

    def hf_name(self, name):
        name = super().hf_name(name)
        if name is None:
            return None
        if name.startswith("bert."):
            name = name[len("bert."):]
        if name.endswith(".gamma"):
            name = name[: -len(".gamma")] + ".weight"
        elif name.endswith(".beta"):
            name = name[: -len(".beta")] + ".bias"
        if name.startswith(_DROP_PREFIXES):
            return None
        return name

    def out_shape(self, hf, out, shape):
        if out.startswith("token_embd."):
            return self.vocab_rows(hf, shape)
        return shape
