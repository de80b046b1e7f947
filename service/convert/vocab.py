"""Tokenizer conversion: Hugging Face tokenizer files -> llama.cpp's tokenizer.ggml.* keys.

Why not transformers: the server must convert without torch or transformers installed. This reads the files
directly and writes what llama.cpp's own converter (convert_hf_to_gguf.py) would write:
* `tokenizer.model` (SentencePiece) -> tokenizer.ggml.model "llama": pieces, scores and types decoded from
  the protobuf with a tiny reader (its field numbers are stable since 2018), then added_tokens.json and
  tokenizer_config.json's added_tokens_decoder applied on top, as llama.cpp does.
* tokenizer.json with a byte-level BPE -> "gpt2": ids, merges, and tokenizer.ggml.pre chosen from the
  pre-tokenizer regex (llama.cpp refuses unknown pre names, and hashing sample encodings as the upstream
  converter does would need transformers).
* tokenizer.json with a byte-fallback BPE (Llama-2 style, no tokenizer.model) -> "llama", score -id.
* WordPiece (tokenizer.json or vocab.txt) -> "bert", in llama.cpp's phantom-space form ('▁word', '##x' -> 'x').
Special token ids, add_bos/add_eos and the chat template come from gguf.SpecialVocab (tokenizer_config.json
chat_template, chat_template.jinja or chat_template.json).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import gguf

from corral.service.convert.spm import read_spm
from corral.store.errors import InvalidArgument

NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6


def _json(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidArgument(f"invalid {path.name}: {exc}") from None


def _looks_special(text: str) -> bool:
    """llama.cpp's does_token_look_special: added tokens some models forget to mark special."""
    if text in ("<pad>", "<mask>", "<2mass>", "[@BOS@]"):
        return True
    pairs = (("<|", "|>"), ("<｜", "｜>"), ("<unused", ">"))
    return any(text.startswith(a) and text.endswith(b) for a, b in pairs)


def _pad(tokens, scores, types, vocab_size: int | None) -> None:
    while vocab_size is not None and len(tokens) < vocab_size:
        tokens.append(f"[PAD{len(tokens)}]")
        scores.append(-1000.0)
        types.append(UNUSED)


def _spm(model_dir: Path, vocab_size: int | None):
    """SentencePiece vocab with llama.cpp's overrides; returns (tokens, scores, types, add_space_prefix)."""
    pieces, add_dummy_prefix = read_spm(model_dir / "tokenizer.model")
    n = vocab_size or len(pieces)
    tokens = [f"[PAD{i}]" for i in range(n)]
    scores, types = [-10000.0] * n, [UNUSED] * n
    for i, (piece, score, kind) in enumerate(pieces[:n]):
        tokens[i], scores[i], types[i] = piece, score, kind
    for text, tid in _json(model_dir / "added_tokens.json").items():
        if 0 <= tid < n:
            tokens[tid], scores[tid], types[tid] = text, -1000.0, USER_DEFINED
    decoder = _json(model_dir / "tokenizer_config.json").get("added_tokens_decoder", {})
    for tid, data in decoder.items():
        tid, text = int(tid), data["content"]
        if 0 <= tid < n:
            special = data.get("special") or _looks_special(text)
            tokens[tid] = text if special else text.replace("\u2581", " ")
            types[tid] = CONTROL if special else USER_DEFINED
            scores[tid] = -1000.0
    return tokens, scores, types, add_dummy_prefix


def _by_id(tok: dict, vocab_size: int | None):
    """tokenizer.json's vocab plus added tokens, as id-indexed lists (holes become [PADi], UNUSED)."""
    vocab = tok["model"]["vocab"]
    if isinstance(vocab, list):  # Unigram's [[piece, score], ...]
        raise InvalidArgument("unsupported tokenizer")
    added = {a["id"]: a for a in tok.get("added_tokens", [])}
    n = max([vocab_size or 0, *(i + 1 for i in vocab.values()), *(i + 1 for i in added)])
    tokens: list[str | None] = [None] * n
    for text, i in vocab.items():
        tokens[i] = text
    types = [NORMAL] * n
    for i, a in added.items():
        tokens[i] = a["content"]
        types[i] = CONTROL if a.get("special") or _looks_special(a["content"]) else USER_DEFINED
    for i, t in enumerate(tokens):
        if t is None:
            tokens[i], types[i] = f"[PAD{i}]", UNUSED
    return tokens, types


def bpe_pre(tok: dict) -> str:
    """tokenizer.ggml.pre for a byte-level BPE, from its pre-tokenizer (llama.cpp's names)."""
    pre = tok.get("pre_tokenizer") or {}
    items = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else [pre]
    regexes = [(p.get("pattern") or {}).get("Regex", "") for p in items if p.get("type") == "Split"]
    text = "".join(regexes)
    if r"\p{N}{1,3}" in text:
        return "llama-bpe"
    if text and r"\p{N}" in text and "(?i:'s|'t|'re|'ve|'m|'ll|'d)" in text:
        return "qwen2"
    if any(p.get("type") == "ByteLevel" and p.get("use_regex", True) for p in items):
        return "gpt-2"
    return "default"


def _wordpiece(model_dir: Path, tok: dict, vocab_size: int | None):
    if tok:
        tokens, types = _by_id(tok, vocab_size)
    else:
        lines = (model_dir / "vocab.txt").read_text(encoding="utf-8").splitlines()
        tokens = [line.rstrip("\r") for line in lines]
        types = [CONTROL if re.fullmatch(r"\[(PAD|UNK|CLS|SEP|MASK)\]", t) else NORMAL for t in tokens]
        _pad(tokens, [0.0] * len(tokens), types, vocab_size)
    phantom = [t if ty == CONTROL else (t[2:] if t.startswith("##") else "\u2581" + t)
               for t, ty in zip(tokens, types, strict=False)]
    return phantom, types


def add_vocab(w: gguf.GGUFWriter, model_dir: Path, hparams: dict, *, bert: bool = False,
              space_prefix: bool | None = None) -> int:
    """Writes the tokenizer keys for the model in `model_dir`; returns the vocabulary size.

    space_prefix overrides a SentencePiece model's add_dummy_prefix (tokenizer.ggml.add_space_prefix)."""
    vocab_size = hparams.get("vocab_size")
    tok = _json(model_dir / "tokenizer.json")
    kind = (tok.get("model") or {}).get("type")
    merges = False
    if bert:
        if kind not in ("WordPiece", None) or (not tok and not (model_dir / "vocab.txt").is_file()):
            raise InvalidArgument("unsupported tokenizer")
        tokens, types = _wordpiece(model_dir, tok, vocab_size)
        w.add_tokenizer_model("bert")
        w.add_tokenizer_pre("bert-bge")
        w.add_token_list(tokens)
        w.add_token_types(types)
        w.add_token_type_count(int(hparams.get("type_vocab_size", 1)))
    elif (model_dir / "tokenizer.model").is_file():
        tokens, scores, types, space = _spm(model_dir, vocab_size)
        _write_llama(w, tokens, scores, types)
        prefix = _json(model_dir / "tokenizer_config.json").get("add_prefix_space")
        if space_prefix is not None:
            prefix = space_prefix
        w.add_add_space_prefix(bool(space if prefix is None else prefix))
    elif kind == "BPE" and tok["model"].get("byte_fallback"):
        tokens, types = _by_id(tok, vocab_size)
        types = [BYTE if re.fullmatch(r"<0x[0-9A-Fa-f]{2}>", t) else ty for t, ty in zip(tokens, types, strict=False)]
        unk = tok["model"].get("unk_token")
        types = [UNKNOWN if t == unk else ty for t, ty in zip(tokens, types, strict=False)]
        scores = [0.0 if ty in (CONTROL, USER_DEFINED) else -float(i) for i, ty in enumerate(types)]
        _write_llama(w, tokens, scores, types)
    elif kind == "BPE":
        tokens, types = _by_id(tok, vocab_size)
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre(bpe_pre(tok))
        w.add_token_list(tokens)
        w.add_token_types(types)
        merges = True
    else:
        raise InvalidArgument("unsupported tokenizer")
    special = gguf.SpecialVocab(model_dir, load_merges=merges, n_vocab=len(tokens),
                                special_token_types=("bos", "eos", "unk", "sep", "pad", "mask"))
    special.add_to_gguf(w, quiet=True)
    return len(tokens)


def _write_llama(w: gguf.GGUFWriter, tokens, scores, types) -> None:
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
