"""Pure protobuf -> Ollama JSON conversions shared by the routes.

Ollama JSON is not protobuf JSON: json_format would drop `false` and zero values, print int64 as strings
and camelCase names, so each shape is written out explicitly here.
"""

import functools
from datetime import UTC, datetime

from corral.protos.structs import struct_to_dict as plain_dict


def rfc3339(ts, utc: bool = False) -> str:
    """A Timestamp as Go's RFC3339Nano: UTC 'Z' (created_at) or the local offset (modified_at).

    Like Go, trailing zeros of the fraction are dropped and a zero offset is written 'Z'.
    """
    return _rfc3339(ts.seconds, ts.nanos, utc)


@functools.lru_cache(maxsize=4096)  # /api/tags formats the same manifest times on every call
def _rfc3339(seconds: int, nanos: int, utc: bool) -> str:
    moment = datetime.fromtimestamp(seconds, tz=UTC)
    if not utc:
        moment = moment.astimezone()
    fraction = f"{nanos:09d}".rstrip("0")
    text = moment.strftime("%Y-%m-%dT%H:%M:%S") + (f".{fraction}" if fraction else "")
    offset = moment.strftime("%z")
    if utc or offset in ("+0000", "-0000", ""):
        return text + "Z"
    return text + offset[:3] + ":" + offset[3:]


def struct_to_dict(struct) -> dict:
    """Struct -> dict with integral numbers as ints and keys sorted, as Go's encoding/json writes maps."""
    return dict(sorted(plain_dict(struct).items()))


def details(d) -> dict:
    return {
        "parent_model": d.parent_model,
        "format": d.format,
        "family": d.family,
        "families": list(d.families) or None,
        "parameter_size": d.parameter_size,
        "quantization_level": d.quantization_level,
    }


def progress(p) -> dict:
    """ProgressResponse -> {"status", "digest"?, "total"?, "completed"?} (zero values omitted)."""
    out = {"status": p.status}
    if p.digest:
        out["digest"] = p.digest
    if p.total:
        out["total"] = p.total
    if p.completed:
        out["completed"] = p.completed
    return out


def message(m) -> dict:
    out = {"role": m.role, "content": m.content}
    if m.thinking:
        out["thinking"] = m.thinking
    if m.images:
        import base64

        out["images"] = [base64.b64encode(i).decode() for i in m.images]
    if m.tool_calls:
        out["tool_calls"] = [struct_to_dict(t) for t in m.tool_calls]
    if m.tool_name:
        out["tool_name"] = m.tool_name
    if m.tool_call_id:
        out["tool_call_id"] = m.tool_call_id
    return out


def metrics(m, out: dict) -> dict:
    """Adds the non-zero metrics of a Metrics message to out (Ollama omits zero values)."""
    for key in ("total_duration", "load_duration", "prompt_eval_count", "prompt_eval_duration",
                "eval_count", "eval_duration"):
        value = getattr(m, key)
        if value:
            out[key] = value
    return out
