"""Tokenizing a text of any length inside the runner: in bounded pieces, with the same tokens, stoppable.

Why not one llama_tokenize call for the whole text, as llama-cpp-python's Llama.tokenize() does:
- a call cannot be interrupted, so a prompt of a million characters could not stop when its caller goes
  away, nor let the runner close; and llama-cpp-python tokenizes a text longer than n_ctx_train tokens
  twice (a first call into a buffer of n_ctx_train tokens, which is too small, then again);
- some of llama.cpp's BPE pre-tokenizers (GPT-2's default, deepseek-llm, gpt-4o: std::regex) recurse once
  per character of a run of digits or punctuation, and a run of ~25,000 such characters overflows the
  stack: the runner dies (SIGSEGV, measured with llama-cpp-python 0.3.36), whatever the context size;
- callers that only need the first tokens (an embedding keeps its first num_ctx tokens, a prompt that
  may not be truncated is refused once it is too long, a chat turn is only compared with the context)
  should not pay for the rest of a huge input.

So a text longer than PIECE_CHARS is cut into pieces of at most PIECE_CHARS characters at word starts (a
space or newline after a non-space character, where llama.cpp's tokenizers start a new token), and each
piece is tokenized behind the text just before it (its anchor), whose tokens are then dropped: the piece
sees the same context as in one call (SentencePiece adds its leading space only at the start of a text;
BPE's pre-tokenizer splits there anyway), so the tokens are those of one call (tests compare them on
SentencePiece, BPE and WordPiece vocabularies). A cut is first checked (the anchor's tokens must be a
prefix of the anchor followed by what comes after the cut); if it fails, an earlier word start is tried. A
text with no word start for PIECE_CHARS characters is cut at that length (tokens next to such a cut may
differ from one call's, which would have crashed on some vocabularies). The cost is linear in the text
(each character is tokenized once, plus two anchors of ANCHOR_CHARS per piece), and `cancelled()` is
checked between pieces.
"""

from __future__ import annotations

from collections.abc import Callable

import llama_cpp

from corral.service.engine.worker import RequestError

PIECE_CHARS = 4096  # characters per llama_tokenize call (far below the ~25,000 that crash, see above)
ANCHOR_CHARS = 64  # text before a cut tokenized again in front of the next piece
CUT_TRIES = 4  # word starts tried, from the end of a piece backwards, before a cut is taken unchecked
WORD_START = (" ", "\n")


def cancelled_error() -> RequestError:
    return RequestError("CANCELLED", "request canceled")


class Tokenizer:
    """The tokenizer of one loaded model. `tokenize` is what Llama.tokenize(text, add_bos, special)
    returns, computed piecewise for long texts; see the module docstring."""

    def __init__(self, llama):
        self.vocab = llama_cpp.llama_model_get_vocab(llama.model)
        self._buf = (llama_cpp.llama_token * 4096)()
        # What add_special puts around a text (BOS; [CLS] and [SEP]): found around a sample's tokens.
        plain = self._call(b"hello", False, False)
        full = self._call(b"hello", True, False)
        at = next((i for i in range(len(full) - len(plain) + 1) if full[i : i + len(plain)] == plain), None)
        self.head: list[int] | None = None if at is None or not plain else full[:at]
        self.tail: list[int] = [] if at is None else full[at + len(plain):]

    def _call(self, data: bytes, add_special: bool, parse_special: bool) -> list[int]:
        n = llama_cpp.llama_tokenize(self.vocab, data, len(data), self._buf, len(self._buf), add_special,
                                     parse_special)
        if n < 0:  # the buffer is too small: -n tokens are needed
            self._buf = (llama_cpp.llama_token * max(-n, 2 * len(self._buf)))()
            n = llama_cpp.llama_tokenize(self.vocab, data, len(data), self._buf, len(self._buf), add_special,
                                         parse_special)
            if n < 0:
                raise RequestError("INTERNAL", f"failed to tokenize ({n})")
        return self._buf[:n]

    def tokens(self, text: str, parse_special: bool) -> list[int]:
        """One call, without the special tokens around the text."""
        return self._call(text.encode("utf-8"), False, parse_special)

    def tokenize(self, text: str, add_special: bool = True, parse_special: bool = False, *,
                 limit: int | None = None, cancelled: Callable[[], bool] | None = None) -> list[int]:
        """The text's tokens (with the special tokens around it when add_special).

        limit: stop once more than `limit` tokens are known; the list then holds more than `limit` tokens,
        the first of them exact, and lacks the closing special tokens. cancelled(): checked between
        pieces; RequestError CANCELLED once it returns True.
        """
        if len(text) <= PIECE_CHARS or self.head is None:
            if cancelled is not None and cancelled():
                raise cancelled_error()
            return self._call(text.encode("utf-8"), add_special, parse_special)
        out = list(self.head) if add_special else []
        start = 0
        while start < len(text):
            if cancelled is not None and cancelled():
                raise cancelled_error()
            end = len(text) if len(text) - start <= PIECE_CHARS else self._cut(text, start, parse_special)
            out.extend(self._piece(text, start, end, parse_special))
            start = end
            if limit is not None and len(out) > limit:
                return out
        if add_special:
            out.extend(self.tail)
        return out

    def _piece(self, text: str, start: int, end: int, parse_special: bool) -> list[int]:
        """The tokens of text[start:end] as one call over the whole text gives them."""
        if start == 0:
            return self.tokens(text[:end], parse_special)
        anchor = text[max(0, start - ANCHOR_CHARS) : start]
        # After an unchecked cut a token may span it; the anchor's count of tokens is dropped all the same.
        return self.tokens(anchor + text[start:end], parse_special)[len(self.tokens(anchor, parse_special)):]

    def _cut(self, text: str, start: int, parse_special: bool) -> int:
        """Where the piece that begins at `start` ends: the last checked word start within PIECE_CHARS,
        else the first unchecked one, else PIECE_CHARS characters on."""
        last = {c: text.rfind(c, start + 1, start + PIECE_CHARS) for c in WORD_START}  # each scanned once
        first = None
        tries = 0
        while tries < CUT_TRIES:
            c = max(last, key=last.__getitem__)
            p = last[c]
            if p <= start:
                break
            last[c] = text.rfind(c, start + 1, p)
            if text[p - 1].isspace():
                continue
            first = p if first is None else first
            tries += 1
            if self._clean(text, p, parse_special):
                return p
        return first if first is not None else start + PIECE_CHARS

    def _clean(self, text: str, p: int, parse_special: bool) -> bool:
        """True when no token spans position p: the tokens of the text before p are a prefix of those
        of the same text followed by what comes after p."""
        lo = max(0, p - ANCHOR_CHARS)
        before = self.tokens(text[lo:p], parse_special)
        return self.tokens(text[lo : p + ANCHOR_CHARS], parse_special)[: len(before)] == before

