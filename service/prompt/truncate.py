"""Chat truncation: the longest tail of a conversation whose prompt fits the context, as Ollama's chatPrompt.

Why whole turns and a search: a conversation longer than num_ctx must still be answered, and cutting its
tokens from the middle (what the runner does to an over-long generate prompt) would leave the model a
prompt that starts mid-message and lose the system prompt. Ollama instead drops the oldest messages,
keeps every system message that came before the cut, and always keeps the latest message. Here the cut
only falls at a user message (a whole turn: the user's message and what answered it go together, so a
template that insists on alternating roles still renders), and the latest user message is always kept.

Fitting is judged on the rendered prompt's token count (`count`, the runner's tokenizer), which grows as
turns are added, so the cut is found by bisection: one count for a conversation that fits whole, about
log2(turns) for one that does not. When even the latest turn does not fit, it is returned alone (with
the system messages) and the runner cuts its tokens (num_keep) or, with truncate=false, refuses it.
"""

from __future__ import annotations

from collections.abc import Callable


def cut_points(messages: list[dict]) -> list[int]:
    """Where the kept tail may start, from the whole conversation (0) to the latest user message."""
    roles = [str(m.get("role") or "").lower() for m in messages]
    users = [i for i, role in enumerate(roles) if role == "user"]
    last = users[-1] if users else max(len(messages) - 1, 0)
    points = [0] + [i for i in users if 0 < i <= last]
    if points[-1] != last:
        points.append(last)
    return points


def with_cut(messages: list[dict], start: int) -> list[dict]:
    """messages[start:], preceded by the system messages that came before `start`."""
    before = [m for m in messages[:start] if str(m.get("role") or "").lower() == "system"]
    return before + messages[start:]


def fit_messages(messages: list[dict], render: Callable[[list[dict]], str], count: Callable[[str], int],
                 limit: int, text: str | None = None) -> tuple[list[dict], str]:
    """The messages to send and their prompt: the most turns whose prompt has at most `limit` tokens.

    render(messages) -> prompt text; count(text) -> its token count; text: render(messages) if known."""
    text = render(messages) if text is None else text
    points = cut_points(messages)
    if len(points) == 1 or count(text) <= limit:
        return messages, text
    lo, hi = 1, len(points) - 1  # points[0] (everything) does not fit; find the first that does
    best: tuple[list[dict], str] | None = None
    while lo <= hi:
        mid = (lo + hi) // 2
        kept = with_cut(messages, points[mid])
        candidate = render(kept)
        if count(candidate) <= limit:
            best, hi = (kept, candidate), mid - 1
        else:
            lo = mid + 1
    if best is None:
        kept = with_cut(messages, points[-1])
        best = (kept, render(kept))
    return best
