"""Property tests for the parsers that read what clients send: model names, Modelfiles, Go durations,
GGUF headers and Go templates. Any input either parses or raises the parser's own error (the one the
service turns into a 400); never another exception, never a hang."""

import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from corral.store.errors import CorralError

SETTINGS = settings(max_examples=300, deadline=2000, database=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])
NAME_CHARS = st.sampled_from(list("abcXYZ019_-.:/@ \x00é\ud800") + ["sha256-" + "0" * 64, "localhost:5000"])


@SETTINGS
@given(st.one_of(st.text(), st.lists(NAME_CHARS, max_size=40).map("".join)))
def test_names(text):
    from corral.store.names import parse_name, require_name

    name = parse_name(text)
    if name.is_valid():
        assert text.isascii()
        str(name), name.display, name.full
    try:
        require_name(text)
    except CorralError as exc:
        assert exc.code == "INVALID_ARGUMENT"


MODELFILE_WORDS = st.sampled_from(["FROM", "PARAMETER", "TEMPLATE", "SYSTEM", "ADAPTER", "LICENSE", "MESSAGE",
                                   "REQUIRES", "from", "#", '"""', '"', "\n", " ", "\t", "\\", "temperature",
                                   "num_ctx", "stop", "user", "1e400", "NaN", "-1", "x", "\r\n", "\ud800", "\x00"])


@SETTINGS
@given(st.one_of(st.text(), st.lists(MODELFILE_WORDS, max_size=30).map(" ".join),
                 st.lists(MODELFILE_WORDS, max_size=30).map("".join), st.binary()))
def test_modelfile(text):
    from corral.store.modelfile import modelfile_to_create, parse_modelfile

    try:
        commands = parse_modelfile(text)
    except CorralError as exc:
        assert exc.code == "INVALID_ARGUMENT", exc
        return
    try:
        modelfile_to_create(commands, base_dir=None)
    except CorralError:
        pass


DURATION_PIECES = st.sampled_from(["1", "0", "-", "+", ".", "5", "h", "m", "s", "ms", "us", "µs", "ns", "e9", "9" * 30,
                                   " ", "\ud800", "inf", "nan"])


@SETTINGS
@given(st.one_of(st.text(max_size=30), st.lists(DURATION_PIECES, max_size=12).map("".join)))
def test_go_durations(text):
    from corral.store.gocompat import parse_go_duration

    try:
        value = parse_go_duration(text)
    except ValueError as exc:
        assert str(exc).startswith("time: "), exc
        return
    assert value == value  # not NaN


def _tiny_gguf(tmp: Path) -> bytes:
    from tests.gguf_models import write_llama_gguf

    path = tmp / "tiny.gguf"
    write_llama_gguf(path)
    return path.read_bytes()[:4096]  # the header: keys and tensor infos


@pytest.fixture(scope="module")
def gguf_header(tmp_path_factory) -> bytes:
    return _tiny_gguf(tmp_path_factory.mktemp("gguf"))


@settings(max_examples=300, deadline=2000, database=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_gguf_headers(gguf_header, tmp_path_factory, data):
    from corral.store.gguf_info import read_gguf

    buf = bytearray(gguf_header)
    for _ in range(data.draw(st.integers(1, 8))):
        kind = data.draw(st.sampled_from(["byte", "u64", "u32", "cut"]))
        pos = data.draw(st.integers(4, len(buf) - 9))
        if kind == "byte":
            buf[pos] = data.draw(st.integers(0, 255))
        elif kind == "u64":
            buf[pos:pos + 8] = struct.pack("<Q", data.draw(st.sampled_from([0, 2**63, 2**64 - 1, 2**32, 10**12])))
        elif kind == "u32":
            buf[pos:pos + 4] = struct.pack("<I", data.draw(st.sampled_from([0, 2**31, 2**32 - 1, 13, 99])))
        else:
            del buf[pos:]
            break
    path = tmp_path_factory.mktemp("g") / "x.gguf"
    path.write_bytes(bytes(buf))
    try:
        read_gguf(path)
    except CorralError:
        pass


TEMPLATE_PIECES = st.sampled_from(["{{", "}}", "{{-", "-}}", " ", ".", "Messages", "range", "end", "if", "else",
                                   "with", "$", ":=", "=", "(", ")", "|", "eq", "slice", "printf", "\"%d\"", "\"x\"",
                                   "1", "json", "index", ".Role", "template", "define", "block", "/*", "*/", "`",
                                   "len", "and", "or", "not", "nil", "99999999999999999999", "'a'", "\\", "\n"])


@SETTINGS
@given(st.one_of(st.text(max_size=60), st.lists(TEMPLATE_PIECES, max_size=30).map("".join)))
def test_go_templates(text):
    from corral.service.prompt.gotemplate import TemplateError, execute, parse
    from corral.service.prompt.gotemplate.funcs import FuncError

    try:
        trees = parse(text)
    except TemplateError:
        return
    try:
        execute(text, trees, {"Messages": [{"Role": "user", "Content": "hi"}], "System": "s", "Prompt": "p"})
    except (TemplateError, FuncError):
        pass
