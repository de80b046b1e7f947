"""Timestamps and maps written the way Go's encoding/json writes them."""

from google.protobuf import timestamp_pb2

from corral.rest_shim.translate import rfc3339, struct_to_dict
from corral.service.api.convert import dict_to_struct


def ts(seconds, nanos):
    return timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos)


def test_rfc3339_nano_like_go(monkeypatch):
    monkeypatch.setenv("TZ", "UTC")
    import time

    time.tzset()
    assert rfc3339(ts(1746889608, 639712648), utc=True) == "2025-05-10T15:06:48.639712648Z"
    assert rfc3339(ts(1746889608, 639712000), utc=True) == "2025-05-10T15:06:48.639712Z"
    assert rfc3339(ts(1746889608, 0), utc=True) == "2025-05-10T15:06:48Z"
    assert rfc3339(ts(1746889608, 5)) == "2025-05-10T15:06:48.000000005Z"  # zero local offset is Z
    monkeypatch.setenv("TZ", "America/Los_Angeles")
    time.tzset()
    try:
        assert rfc3339(ts(1746889608, 639712648)) == "2025-05-10T08:06:48.639712648-07:00"
    finally:
        monkeypatch.setenv("TZ", "UTC")
        time.tzset()


def test_struct_round_trip_sorts_keys_and_restores_ints():
    data = {"b.count": 32, "a.eps": 1e-05, "c.list": None, "d.name": "x", "e.big": 32763876352}
    out = struct_to_dict(dict_to_struct(data))
    assert list(out) == sorted(data)
    assert out == data and isinstance(out["b.count"], int)
