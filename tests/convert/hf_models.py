"""Tiny random Hugging Face models and tokenizers, built with transformers/sentencepiece/tokenizers for the tests.

Why: the converter must be checked against an independent reference, not against itself. Each builder saves a
real `save_pretrained` folder (safetensors + config.json + tokenizer files) whose weights are random but
seeded, and returns what the reference needs: the torch model (for logits/hidden states) and an `encode`
function (the tokenizer library's own encoding). Weights are re-drawn with a larger spread than the HF
initialisers so that a wrong permutation, a missing +1 on a norm or a swapped tensor changes the outputs
visibly. Nothing is downloaded: the tokenizers are trained on a small built-in corpus in well under a second.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from tests.gguf_models import WORDS

CORPUS = [
    " ".join(WORDS[i:i + 12]) + ("." if i % 2 else "!") for i in range(0, len(WORDS), 5)
] + ["The quick brown fox jumps over the lazy dog.", "Hello world, this is a tiny model.",
     "Numbers 123 4567 and symbols #@! are here.", "What is the answer to the question?"]
TEXTS = ["The sky is blue and the sun is hot.", "hello world", "Write code in python, please!", "tree 42"]
CHAT_TEMPLATE = "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
QWEN2_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
               r"|\s*[\r\n]+|\s+(?!\S)|\s+")


def _randomize(model: torch.nn.Module, seed: int, norm_mean: float) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in sorted(model.named_parameters()):
            if p.ndim == 1:
                p.copy_(norm_mean + 0.2 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(torch.randn(p.shape, generator=gen) * (1.5 / p.shape[-1] ** 0.5))


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1), encoding="utf-8")


def spm_tokenizer(folder: Path, *, dummy_prefix: bool = True, vocab_size: int = 400):
    """Trains a byte-fallback BPE SentencePiece model into folder/tokenizer.model; returns the processor."""
    import sentencepiece as spm

    folder.mkdir(parents=True, exist_ok=True)
    corpus = folder / "corpus.txt"
    corpus.write_text("\n".join(CORPUS * 3), encoding="utf-8")
    spm.SentencePieceTrainer.train(
        input=str(corpus), model_prefix=str(folder / "tokenizer"), vocab_size=vocab_size, model_type="bpe",
        byte_fallback=True, normalization_rule_name="identity", remove_extra_whitespaces=False,
        add_dummy_prefix=dummy_prefix, character_coverage=1.0, bos_id=1, eos_id=2, unk_id=0, pad_id=-1,
        minloglevel=2, num_threads=1,
    )
    corpus.unlink()
    (folder / "tokenizer.vocab").unlink()
    sp = spm.SentencePieceProcessor(model_file=str(folder / "tokenizer.model"))
    _write_json(folder / "tokenizer_config.json", {
        "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "add_bos_token": True,
        "add_eos_token": False, "chat_template": CHAT_TEMPLATE})
    return sp


def bpe_tokenizer(folder: Path, vocab_size: int = 500):
    """Trains a byte-level BPE (Qwen2's pre-tokenizer regex) into folder/tokenizer.json."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_REGEX), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    tok.train_from_iterator(CORPUS * 3, trainer)
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    _write_json(folder / "tokenizer_config.json", {
        "bos_token": None, "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>",
        "chat_template": CHAT_TEMPLATE})
    return tok


def wordpiece_tokenizer(folder: Path, vocab_size: int = 300):
    """Trains a lower-casing BERT WordPiece into folder/tokenizer.json and vocab.txt."""
    from tokenizers import BertWordPieceTokenizer, processors

    tok = BertWordPieceTokenizer(lowercase=True)
    tok.train_from_iterator(CORPUS * 3, vocab_size=vocab_size,
                            special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(  # as real BERT tokenizers: [CLS] text [SEP]
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    tok.save_model(str(folder))
    _write_json(folder / "tokenizer_config.json", {
        "cls_token": "[CLS]", "sep_token": "[SEP]", "pad_token": "[PAD]", "unk_token": "[UNK]",
        "mask_token": "[MASK]", "do_lower_case": True, "tokenizer_class": "BertTokenizer"})
    return tok


def decoder_model(kind: str, folder: Path, *, tied: bool = False, seed: int = 0, dtype: str = "float32"):
    """A tiny random decoder of `kind` (llama, mistral, qwen2, gemma2, gemma3) saved in `folder`.

    dtype is the safetensors dtype (float32, float16, bfloat16); the returned float32 model holds exactly the
    saved (rounded) weights. Returns (model, encode), encode(text) -> ids without BOS from the tokenizer library.
    """
    import transformers as T

    if kind == "qwen2":
        tok = bpe_tokenizer(folder)
        encode, vocab = (lambda t: tok.encode(t).ids), tok.get_vocab_size()
    else:
        sp = spm_tokenizer(folder, dummy_prefix=not kind.startswith("gemma"))
        encode, vocab = (lambda t: sp.encode(t)), sp.get_piece_size()
    common = dict(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                  tie_word_embeddings=tied, bos_token_id=1, eos_token_id=2)
    if kind in ("llama", "mistral"):
        cfg_cls, model_cls = (T.LlamaConfig, T.LlamaForCausalLM) if kind == "llama" else \
            (T.MistralConfig, T.MistralForCausalLM)
        config = cfg_cls(**common, rms_norm_eps=1e-5)
    elif kind == "qwen2":
        config, model_cls = T.Qwen2Config(**{**common, "bos_token_id": None, "eos_token_id": 2},
                                          rms_norm_eps=1e-6), T.Qwen2ForCausalLM
    elif kind == "gemma2":
        config, model_cls = T.Gemma2Config(**common, head_dim=16, query_pre_attn_scalar=16,
                                           sliding_window=128, final_logit_softcapping=30.0,
                                           attn_logit_softcapping=50.0), T.Gemma2ForCausalLM
    elif kind == "gemma3":
        config, model_cls = T.Gemma3TextConfig(**common, head_dim=16, query_pre_attn_scalar=16,
                                               sliding_window=128,
                                               layer_types=["sliding_attention", "full_attention"]), \
            T.Gemma3ForCausalLM
    else:
        raise ValueError(kind)
    config._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = model_cls(config).eval()
    _randomize(model, seed, 0.0 if kind.startswith("gemma") else 1.0)
    if tied:
        model.tie_weights()
    model.to(getattr(torch, dtype)).save_pretrained(folder)
    return model.float(), encode


def bert_model(folder: Path, *, seed: int = 0, pooling: str | None = "mean"):
    """A tiny random BertModel with a trained WordPiece tokenizer; sentence-transformers pooling files."""
    import transformers as T

    tok = wordpiece_tokenizer(folder)
    config = T.BertConfig(vocab_size=tok.get_vocab_size(), hidden_size=64, num_hidden_layers=2,
                          num_attention_heads=4, intermediate_size=128, max_position_embeddings=128,
                          type_vocab_size=2)
    torch.manual_seed(seed)
    model = T.BertModel(config, add_pooling_layer=True).eval()
    _randomize(model, seed, 1.0)
    model.save_pretrained(folder)
    if pooling:
        _write_json(folder / "1_Pooling" / "config.json", {
            "word_embedding_dimension": 64, "pooling_mode_mean_tokens": pooling == "mean",
            "pooling_mode_cls_token": pooling == "cls"})
        (folder / "modules.json").write_text(json.dumps([
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]))
    return model, (lambda t: tok.encode(t).ids)


def folder_files(folder: Path) -> dict[str, Path]:
    """The create request's view of a model folder: relative name -> file."""
    return {p.relative_to(folder).as_posix(): p for p in sorted(folder.rglob("*")) if p.is_file()}
