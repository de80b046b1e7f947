"""How the Ollama CLI writes numbers, times and tables, so `corral list` reads like `ollama list`.

Why copies of Go's rules: users compare the two tools' output and scripts parse it, so sizes follow
Ollama's format.HumanBytes (decimal units, "1.2 GB", "12 MB"), ages its format.HumanTime ("3 days ago",
"4 minutes from now", "Forever"), durations Go's time.Duration.String ("1.5s", "850ms"), and tables its
tablewriter setup (left-aligned columns separated by four spaces, no borders).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence

from rich.cells import cell_len

from corral.store.gocompat import format_float_g

_UNITS = (("TB", 1000**4), ("GB", 1000**3), ("MB", 1000**2), ("KB", 1000))


def human_bytes(n: int) -> str:
    """format.HumanBytes: "512 B", "1.2 KB", "12 MB", "2 GB"."""
    for unit, size in _UNITS:
        if n >= size:
            value = n / size
            if value >= 10 or value == math.trunc(value):
                return f"{int(value)} {unit}"
            return f"{value:.1f} {unit}"
    return f"{n} B"


def human_duration(seconds: float) -> str:
    """format.humanDuration: "Less than a second", "About a minute", "3 hours", "2 weeks", ..."""
    whole = int(seconds)
    if whole < 1:
        return "Less than a second"
    if whole == 1:
        return "1 second"
    if whole < 60:
        return f"{whole} seconds"
    minutes = int(seconds / 60)
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = math.floor(seconds / 3600 + 0.5)  # Go's math.Round for positive values
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{int(seconds / 3600) // 24 // 365} years"


def human_time(epoch: float | None, zero_value: str, now: float | None = None) -> str:
    """format.HumanTime: "3 days ago", "4 minutes from now", "Forever" (more than 20 years ahead)."""
    if epoch is None:
        return zero_value
    delta = (time.time() if now is None else now) - epoch
    if int(int(delta / 3600) / 24 / 365) < -20:
        return "Forever"
    if delta < 0:
        return human_duration(-delta) + " from now"
    return human_duration(delta) + " ago"


def timestamp_seconds(ts) -> float | None:
    """A google.protobuf.Timestamp as epoch seconds; None when unset (Go's zero time)."""
    if ts is None or (ts.seconds == 0 and ts.nanos == 0):
        return None
    return ts.seconds + ts.nanos / 1e9


def go_duration(ns: int) -> str:
    """time.Duration.String: "0s", "850µs", "1.5ms", "2.25s", "1m5s", "1h0m0s"."""
    if ns == 0:
        return "0s"
    sign, u = ("-" if ns < 0 else ""), abs(int(ns))
    if u < 1_000_000_000:
        for unit, size, digits in (("ns", 1, 0), ("µs", 1_000, 3), ("ms", 1_000_000, 6)):
            if u < size * 1000:
                whole, frac = divmod(u, size)
                fraction = f"{frac:0{digits}d}".rstrip("0") if digits else ""
                return f"{sign}{whole}{'.' + fraction if fraction else ''}{unit}"
    secs, frac = divmod(u, 1_000_000_000)
    fraction = f"{frac:09d}".rstrip("0")
    text = f"{secs % 60}{'.' + fraction if fraction else ''}s"
    minutes = secs // 60
    if minutes:
        text = f"{minutes % 60}m{text}"
        if minutes // 60:
            text = f"{minutes // 60}h{text}"
    return sign + text


def go_value(value) -> str:
    """fmt's %v for a JSON value: true/false, shortest floats (1e-05), [a b c] for lists."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return format_float_g(value)
    if isinstance(value, (list, tuple)):
        return "[" + " ".join(go_value(v) for v in value) + "]"
    if value is None:
        return "<nil>"
    return str(value)


def number(value) -> str:
    """strconv.FormatFloat(f, 'f', -1, 64): 131072, 0.5 (never an exponent)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if float(value).is_integer():
        return str(int(value))
    return repr(float(value))


def table(rows: Iterable[Sequence[str]], header: Sequence[str] | None = None, padding: str = "    ") -> str:
    """Left-aligned columns, padded to the widest cell and separated by `padding` (Ollama's tablewriter)."""
    lines = [list(header)] if header else []
    lines += [list(r) for r in rows]
    if not lines:
        return ""
    width = max(len(r) for r in lines)
    widths = [max((cell_len(r[i]) for r in lines if i < len(r)), default=0) for i in range(width)]
    out = []
    for r in lines:
        cells = [c + " " * (widths[i] - cell_len(c)) for i, c in enumerate(r)]
        out.append(padding.join(cells).rstrip())
    return "\n".join(out) + "\n"


def metrics_summary(m) -> str:
    """api.Metrics.Summary (`run --verbose`, `/set verbose`): durations, counts and rates."""
    lines = []
    if m.total_duration > 0:
        lines.append(f"total duration:       {go_duration(m.total_duration)}")
    if m.load_duration > 0:
        lines.append(f"load duration:        {go_duration(m.load_duration)}")
    if m.prompt_eval_count > 0:
        lines.append(f"prompt eval count:    {m.prompt_eval_count} token(s)")
    if m.prompt_eval_duration > 0:
        lines.append(f"prompt eval duration: {go_duration(m.prompt_eval_duration)}")
        lines.append(f"prompt eval rate:     {m.prompt_eval_count / (m.prompt_eval_duration / 1e9):.2f} tokens/s")
    if m.eval_count > 0:
        lines.append(f"eval count:           {m.eval_count} token(s)")
    if m.eval_duration > 0:
        lines.append(f"eval duration:        {go_duration(m.eval_duration)}")
        lines.append(f"eval rate:            {m.eval_count / (m.eval_duration / 1e9):.2f} tokens/s")
    return "".join(line + "\n" for line in lines)
