"""Tiny GGUF models whose greedy output is a fixed script: real models that "decide" to call a tool or think.

Why: a random tiny model never emits `<tool_call>{...}</tool_call>` or `<think>...</think>` by itself,
and the tool-call and thinking parsers must be driven by real generation (the runner's sampling, the
token-to-text path, streaming) rather than by a hook in the server. So these files are built to say one
exact text, with no test-only code in the server at all.

How: a llama model whose attention and feed-forward outputs are zero (attn_output and ffn_down weights
are 0), so the last hidden state is the current token's own embedding: the model is a bigram table.
Every token of a script is one user-defined vocab entry (any text, e.g. a whole JSON tool call) with a
one-hot embedding; the output row of each script token points at its predecessor's one-hot direction, so
after the trigger token (the last token of the prompt, e.g. "\\n" = "<0x0A>") the model emits script[0],
then script[1], ..., then end-of-sequence. The winning logit is 40 and every other is 0, so the script
comes out with default sampling too. A token may follow several predecessors, but each script token has
one successor, so a text is split into tokens that are all different.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import gguf
import numpy as np

from tests.gguf_models import USER_DEFINED, spm_vocab

NEWLINE = "<0x0A>"  # the byte token of "\n": chat templates end their prompt with "assistant\n"
EOS = "</s>"


def write_scripted_gguf(path: str | os.PathLike, scripts: Mapping[str, Sequence[str]], *,
                        chat_template: str | None = None, n_embd: int = 64, seed: int = 0) -> Path:
    """A llama GGUF that, after a prompt ending in token `trigger`, generates the tokens of
    `scripts[trigger]` and then stops. Triggers are vocab entries (e.g. NEWLINE); any other trigger and
    every script entry become user-defined tokens (their exact text, matched whole in prompts too)."""
    tokens, scores, types = spm_vocab()
    index = {t: i for i, t in enumerate(tokens)}
    for trigger, script in scripts.items():
        for piece in (trigger, *script):
            if piece not in index:
                index[piece] = len(tokens)
                tokens.append(piece)
                scores.append(0.0)
                types.append(USER_DEFINED)
    successor: dict[str, str] = {}
    for trigger, script in scripts.items():
        chain = [trigger, *script, EOS]
        for a, b in zip(chain, chain[1:], strict=False):
            if successor.setdefault(a, b) != b:
                raise ValueError(f"token {a!r} would need two successors ({successor[a]!r}, {b!r})")
    chained = sorted({*successor, *successor.values()}, key=index.__getitem__)
    if len(chained) > n_embd:
        raise ValueError(f"{len(chained)} script tokens need n_embd >= {len(chained)}")
    axis = {t: k for k, t in enumerate(chained)}

    rng = np.random.default_rng(seed)
    n_vocab, n_ff, n_head = len(tokens), 2 * n_embd, 4
    embd = rng.standard_normal((n_vocab, n_embd)).astype(np.float32)
    embd[:, : len(chained)] = 0.0  # other tokens stay out of the script's directions
    for t, k in axis.items():
        embd[index[t]] = 0.0
        embd[index[t], k] = np.sqrt(n_embd)  # RMS norm keeps it as it is
    output = np.zeros((n_vocab, n_embd), dtype=np.float32)
    for a, b in successor.items():
        output[index[b], axis[a]] = 40.0 / np.sqrt(n_embd)

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_type("model")
    w.add_name("scripted")
    w.add_file_type(0)
    w.add_context_length(512)
    w.add_embedding_length(n_embd)
    w.add_block_count(1)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_head)
    w.add_rope_dimension_count(n_embd // n_head)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    if chat_template is not None:
        w.add_chat_template(chat_template)
    w.add_tensor("token_embd.weight", embd)
    w.add_tensor("output_norm.weight", np.ones(n_embd, dtype=np.float32))
    w.add_tensor("output.weight", output)
    w.add_tensor("blk.0.attn_norm.weight", np.ones(n_embd, dtype=np.float32))
    for name in ("attn_q", "attn_k", "attn_v"):
        w.add_tensor(f"blk.0.{name}.weight", (rng.standard_normal((n_embd, n_embd)) * 0.1).astype(np.float32))
    w.add_tensor("blk.0.attn_output.weight", np.zeros((n_embd, n_embd), dtype=np.float32))
    w.add_tensor("blk.0.ffn_norm.weight", np.ones(n_embd, dtype=np.float32))
    w.add_tensor("blk.0.ffn_gate.weight", (rng.standard_normal((n_ff, n_embd)) * 0.1).astype(np.float32))
    w.add_tensor("blk.0.ffn_up.weight", (rng.standard_normal((n_ff, n_embd)) * 0.1).astype(np.float32))
    w.add_tensor("blk.0.ffn_down.weight", np.zeros((n_embd, n_ff), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return Path(path)
