"""keep_alive values as Ollama reads them (spec §5 table), through the shim's parser."""

import pytest

from corral.rest_shim.body import keep_alive, parse_go_duration
from corral.rest_shim.errors import HTTPError


@pytest.mark.parametrize(
    "text, seconds",
    [("0", 0), ("5m", 300), ("1h30m", 5400), ("-1s", -1), ("1.5h", 5400), ("300ms", 0.3), ("2m3.5s", 123.5),
     ("+10s", 10), ("1us", 1e-6), ("1µs", 1e-6), ("4ns", 4e-9)],
)
def test_go_durations(text, seconds):
    assert parse_go_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "text, error",
    [("300", 'time: missing unit in duration "300"'), ("abc", 'time: invalid duration "abc"'),
     ("", 'time: invalid duration ""'), ("5x", 'time: unknown unit "x" in duration "5x"'), ("-", 'time: invalid duration "-"')],
)
def test_go_duration_errors(text, error):
    with pytest.raises(ValueError) as info:
        parse_go_duration(text)
    assert str(info.value) == error


def seconds(value):
    d = keep_alive({"keep_alive": value})
    return None if d is None else d.seconds + d.nanos / 1e9


def test_keep_alive_values():
    assert seconds(None) is None
    assert seconds(30) == 30
    assert seconds(1.5) == 1.5
    assert seconds("10m") == 600
    assert seconds(-1) == -1
    assert seconds("-5m") == -1  # any negative value means forever
    assert seconds(0) == 0 and seconds("0s") == 0


@pytest.mark.parametrize(
    "value, error",
    [("300", 'time: missing unit in duration "300"'), (True, "Unsupported type: 'bool'"),
     ([1], "Unsupported type: '[]interface {}'"), ({"a": 1}, "Unsupported type: 'map[string]interface {}'")],
)
def test_keep_alive_errors(value, error):
    with pytest.raises(HTTPError) as info:
        keep_alive({"keep_alive": value})
    assert (info.value.status, info.value.message) == (400, error)
