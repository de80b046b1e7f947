"""google.protobuf.Struct <-> dict, the one conversion the service and the REST shim share.

Why here: a Struct stores every number as a double, so a `num_ctx` of 4096 comes back as 4096.0 unless
integral numbers are turned back into ints, and the service (reading options and parameters) and the
shim (writing show's model_info and parameters as Ollama's JSON) must agree on that rule. Both already
depend on the protos package, and this module needs nothing but protobuf.
"""

from __future__ import annotations

import math

from google.protobuf import struct_pb2
from google.protobuf.json_format import MessageToDict, ParseDict


def struct_to_dict(struct: struct_pb2.Struct | None) -> dict:
    """Struct -> plain dict, with integral numbers as int (up to 2**53, where doubles stay exact)."""
    if struct is None:
        return {}
    return _ints(MessageToDict(struct))


def _ints(value):
    if isinstance(value, float) and math.isfinite(value) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, dict):
        return {k: _ints(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_ints(v) for v in value]
    return value


def dict_to_struct(data: dict | None) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    if data:
        ParseDict(data, struct)
    return struct
