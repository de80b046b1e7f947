"""The one Go-compatibility module: the encodings every layer shares (checked against Go's outputs)."""

import pytest

from corral.store.gocompat import (
    GoStruct,
    format_float_g,
    format_float_json,
    go_json,
    go_marshal,
    go_quote,
    parse_go_duration,
)


def test_go_json_is_encoder_encode():
    assert go_json({"b": 1.0, "a": [1e-05, 1e21, "<&>"]}) == b'{"b":1,"a":[0.00001,1e+21,"\\u003c\\u0026\\u003e"]}\n'
    assert go_json({"b": {"d": 1, "c": 2}, "a": 0}, sort_keys=True) == b'{"a":0,"b":{"c":2,"d":1}}\n'
    assert go_json({"s": "\ud800x\u2028"}) == '{"s":"\ufffdx\\u2028"}\n'.encode()  # a lone surrogate cannot crash
    with pytest.raises(ValueError, match="unsupported value"):
        go_json({"x": float("nan")})


def test_go_marshal_sorts_maps_but_not_structs():
    assert go_marshal({"b": 1, "a": GoStruct(z=1, y=2)}) == '{"a":{"z":1,"y":2},"b":1}'


@pytest.mark.parametrize("value,g,json_form", [
    (1e6, "1e+06", "1000000"), (0.0001, "0.0001", "0.0001"), (1e-07, "1e-07", "1e-7"), (-0.0, "-0", "-0"),
    (4096.0, "4096", "4096"), (0.1 + 0.2, "0.30000000000000004", "0.30000000000000004"),
])
def test_float_formats(value, g, json_form):
    assert format_float_g(value) == g and format_float_json(value) == json_form


def test_go_quote():
    assert go_quote('a"b\\\n\x00\x7f\u00a0é😀') == '"a\\"b\\\\\\n\\x00\\x7f\\u00a0é😀"'
    assert go_quote("'", "'") == "'\\''"


@pytest.mark.parametrize("text,seconds", [("5m", 300), ("1h30m", 5400), ("-1s", -1), ("0", 0), ("1.5h", 5400),
                                          ("300ms", 0.3)])
def test_durations(text, seconds):
    assert parse_go_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text,error", [("", 'time: invalid duration ""'), ("5", 'time: missing unit in duration "5"'),
                                        ("5y", 'time: unknown unit "y" in duration "5y"')])
def test_duration_errors(text, error):
    with pytest.raises(ValueError, match=error):
        parse_go_duration(text)
