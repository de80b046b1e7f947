"""Tests for store/modelfile.py and store/modelfile_print.py: Ollama's Modelfile grammar, error texts,
PARAMETER typing, request-option checks and the show texts, table-driven, plus a format → parse round trip.

Why: clients match these error strings and show texts exactly, and legacy `create` requests depend on the
parser accepting everything Ollama's does.
"""

import hashlib
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from corral.store.errors import InvalidArgument  # noqa: E402
from corral.store.modelfile import (  # noqa: E402
    PARAMETER_TYPES,
    Command,
    float32_value,
    format_parameters,
    format_show_modelfile,
    modelfile_to_create,
    parse_modelfile,
    parse_parameter,
    quote,
    validate_options,
)

CMD_ERR = ('command must be one of "from", "license", "template", "system", "adapter", "draft", '
           '"renderer", "parser", "parameter", "message", or "requires"')
ROLE_ERR = 'message role must be one of "system", "user", or "assistant"'


# --- parse_modelfile ------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "text, expected",
    [
        ("FROM llama3.2", [Command("from", "llama3.2")]),
        ("from llama3.2\n", [Command("from", "llama3.2")]),
        ("FrOm   llama3.2   \n", [Command("from", "llama3.2")]),
        ("FROM\tx\t\n", [Command("from", "x")]),
        ("# a comment\nFROM x # not a comment\n", [Command("from", "x # not a comment")]),
        ("\n\n  FROM x\n\n", [Command("from", "x")]),
        ("FROM x\r\nSYSTEM hi\r\n", [Command("from", "x"), Command("system", "hi")]),
        ("FROM x\nSYSTEM  hello  world \n", [Command("from", "x"), Command("system", "hello  world")]),
        ('FROM x\nSYSTEM "quoted"\n', [Command("from", "x"), Command("system", "quoted")]),
        ('FROM x\nSYSTEM " spaced "\n', [Command("from", "x"), Command("system", " spaced ")]),
        ('FROM x\nSYSTEM """a "b"\nc"""\n', [Command("from", "x"), Command("system", 'a "b"\nc')]),
        ('FROM x\nTEMPLATE "line1\n  line2\n"\n', [Command("from", "x"), Command("template", "line1\n  line2\n")]),
        ('FROM x\nSYSTEM """\n"""\n', [Command("from", "x"), Command("system", "\n")]),
        ('FROM x\nSYSTEM ""\n', [Command("from", "x"), Command("system", "")]),
        ("FROM x\nSYSTEM \n", [Command("from", "x"), Command("system", "")]),
        ("FROM x\nSYSTEM It's \"fine\"\n", [Command("from", "x"), Command("system", "It's \"fine\"")]),
        ("FROM x\nPARAMETER temperature 0.7\n", [Command("from", "x"), Command("parameter", "0.7", "temperature")]),
        ("FROM x\nPARAMETER Num_Ctx2 5\n", [Command("from", "x"), Command("parameter", "5", "Num_Ctx2")]),
        ("FROM x\nPARAMETER stop <|eot_id|>\n", [Command("from", "x"), Command("parameter", "<|eot_id|>", "stop")]),
        ("FROM x\nMESSAGE user hi there\n", [Command("from", "x"), Command("message", "hi there", "user")]),
        ('FROM x\nMESSAGE assistant """a\nb"""', [Command("from", "x"), Command("message", "a\nb", "assistant")]),
        ("FROM x\nADAPTER ./a.gguf\nLICENSE MIT\nLICENSE Apache\n",
         [Command("from", "x"), Command("adapter", "./a.gguf"), Command("license", "MIT"),
          Command("license", "Apache")]),
        ("FROM x\nREQUIRES 0.5.0\nRENDERER r\nPARSER p\nDRAFT d\n",
         [Command("from", "x"), Command("requires", "0.5.0"), Command("renderer", "r"), Command("parser", "p"),
          Command("draft", "d")]),
        ("\ufeffFROM x", [Command("from", "x")]),
        (b"\xef\xbb\xbfFROM x\n", [Command("from", "x")]),
        ("FROM x\n".encode("utf-16-le").join([b"\xff\xfe", b""]), [Command("from", "x")]),
        (b"\xfe\xff" + "FROM ☃\n".encode("utf-16-be"), [Command("from", "☃")]),
        ("FROM x\nSYSTEM héllo ☃ 世界\n", [Command("from", "x"), Command("system", "héllo ☃ 世界")]),
        ("FROM x\nSYSTEM a\x01b\u200bc\n", [Command("from", "x"), Command("system", "abc")]),  # non-printables dropped
        ("FROM a\nFROM b\n", [Command("from", "a"), Command("from", "b")]),
    ],
)
def test_parse(text, expected):
    assert parse_modelfile(text) == expected


@pytest.mark.parametrize(
    "text, error",
    [
        ("", "no FROM line"),
        ("# only a comment\n", "no FROM line"),
        ("SYSTEM hi\n", "no FROM line"),
        ("FROM", "unexpected EOF"),
        ("FROM x\nSYSTEM", "unexpected EOF"),
        ("FROM x\nPARAMETER temperature", "unexpected EOF"),
        ('FROM x\nSYSTEM "unterminated\n', "unexpected EOF"),
        ('FROM x\nSYSTEM """unterminated"\n', "unexpected EOF"),
        ('FROM x\nSYSTEM "abc" def\n', "unexpected EOF"),
        ("FOO bar\n", f"(line 1): {CMD_ERR}"),
        ("FROM x\n\nINSTRUCTION y\n", f"(line 3): {CMD_ERR}"),
        ("FROM\nx\n", f"(line 2): {CMD_ERR}"),  # the newline already counted, as in Go
        ("FROM x\r\nBAD y\r\n", f"(line 3): {CMD_ERR}"),  # CR and LF each count
        ("FROM-x\n", f"(line 1): {CMD_ERR}"),
        ("FROM x\nMESSAGE bot hi\n", f"(line 2): {ROLE_ERR}"),
        ("FROM x\nMESSAGE User hi\n", f"(line 2): {ROLE_ERR}"),
        ("FROM x\nPARAMETER top-k 5\n", "unexpected EOF: top"),
        ("FROM x\nPARAMETER temp\n", "unexpected EOF: temp"),
        ("FROM x\nMESSAGE user\n", "unexpected EOF: user"),
    ],
)
def test_parse_errors(text, error):
    with pytest.raises(InvalidArgument) as e:
        parse_modelfile(text)
    assert e.value.message == error


# --- PARAMETER typing -----------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "key, value, expected",
    [
        ("temperature", "0.7", 0.7),
        ("temperature", "1", 1.0),
        ("temperature", "+.5", 0.5),
        ("top_p", "1e-5", 1e-05),
        ("top_p", "0.1000000001", 0.1),  # rounded to float32, shortest repr
        ("min_p", "0x1p-2", 0.25),
        ("repeat_penalty", "-1.5E2", -150.0),
        ("num_ctx", "4096", 4096),
        ("num_ctx", "+8", 8),
        ("seed", "-1", -1),
        ("num_predict", "9223372036854775807", 2**63 - 1),
        ("use_mmap", "true", True),
        ("use_mmap", "F", False),
        ("use_mmap", "0", False),
        ("stop", "<|eot_id|>", ["<|eot_id|>"]),
        ("stop", "two words", ["two words"]),
    ],
)
def test_parse_parameter(key, value, expected):
    got = parse_parameter(key, value)
    assert got == expected and type(got) is type(expected)


@pytest.mark.parametrize(
    "key, value, error",
    [
        ("temprature", "1", "unknown parameter 'temprature'"),
        ("Temperature", "1", "unknown parameter 'Temperature'"),
        ("", "1", "unknown parameter ''"),
        ("temperature", "hot", "invalid float value [hot]"),
        ("temperature", "1_0", "invalid float value [1_0]"),
        ("temperature", "1e40", "invalid float value [1e40]"),
        ("temperature", "0x10", "invalid float value [0x10]"),
        ("temperature", "", "invalid float value []"),
        ("num_ctx", "4096.0", "invalid int value [4096.0]"),
        ("num_ctx", "1e+06", "invalid int value [1e+06]"),
        ("num_ctx", "1_000", "invalid int value [1_000]"),
        ("num_ctx", "9223372036854775808", "invalid int value [9223372036854775808]"),
        ("num_ctx", "٣", "invalid int value [٣]"),
        ("use_mmap", "yes", "invalid bool value [yes]"),
        ("use_mmap", "tRUE", "invalid bool value [tRUE]"),
    ],
)
def test_parse_parameter_errors(key, value, error):
    with pytest.raises(InvalidArgument) as e:
        parse_parameter(key, value)
    assert e.value.message == error


# --- modelfile_to_create --------------------------------------------------------------------------------

def test_to_create_from_name():
    text = ("FROM llama3.2\nSYSTEM You are terse.\nTEMPLATE {{ .Prompt }}\nPARAMETER temperature 0.5\n"
            "PARAMETER stop <|end|>\nPARAMETER stop </s>\nPARAMETER num_ctx 1024\nPARAMETER num_ctx 2048\n"
            "PARAMETER mirostat 2\nLICENSE MIT\nLICENSE BSD\nMESSAGE user hi\nMESSAGE assistant hello\n")
    req = modelfile_to_create(parse_modelfile(text))
    assert req == {
        "from": "llama3.2",
        "system": "You are terse.",
        "template": "{{ .Prompt }}",
        "parameters": {"temperature": 0.5, "stop": ["<|end|>", "</s>"], "num_ctx": 2048},
        "license": ["MIT", "BSD"],
        "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}],
    }


def test_to_create_minimal_and_errors():
    assert modelfile_to_create(parse_modelfile("FROM x")) == {"from": "x"}
    with pytest.raises(InvalidArgument, match=r"^invalid float value \[x\]$"):
        modelfile_to_create(parse_modelfile("FROM a\nPARAMETER temperature x"))
    with pytest.raises(InvalidArgument, match=r"^unknown parameter 'bogus'$"):
        modelfile_to_create(parse_modelfile("FROM a\nPARAMETER bogus 1"))
    with pytest.raises(InvalidArgument, match="no FROM line"):
        modelfile_to_create([Command("system", "x")])


def test_to_create_paths(tmp_path):
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF-ish")
    (tmp_path / "adapters").mkdir()
    lora = tmp_path / "adapters" / "lora.gguf"
    lora.write_bytes(b"lora")
    digest = "sha256:" + hashlib.sha256(b"GGUF-ish").hexdigest()
    cmds = parse_modelfile("FROM ./model.gguf\nADAPTER adapters/lora.gguf\n")
    req = modelfile_to_create(cmds, base_dir=tmp_path)
    assert req == {"files": {"model.gguf": digest},
                   "adapters": {"lora.gguf": "sha256:" + hashlib.sha256(b"lora").hexdigest()}}
    # absolute paths too, and a custom importer (a store that also writes the blob)
    seen = []
    req = modelfile_to_create(parse_modelfile(f"FROM {gguf}"), base_dir=tmp_path,
                              import_file=lambda p: seen.append(p) or "sha256:" + "0" * 64)
    assert req == {"files": {"model.gguf": "sha256:" + "0" * 64}} and seen == [gguf]
    # a name that is no file stays a model name; without base_dir nothing is looked up
    assert modelfile_to_create(parse_modelfile("FROM llama3.2"), base_dir=tmp_path) == {"from": "llama3.2"}
    assert modelfile_to_create(parse_modelfile("FROM ./model.gguf")) == {"from": "./model.gguf"}
    with pytest.raises(InvalidArgument, match="no such file or directory"):
        modelfile_to_create(parse_modelfile("FROM x\nADAPTER ./missing.gguf"), base_dir=tmp_path)


def test_to_create_directory(tmp_path):
    d = tmp_path / "hf"
    (d / "sub").mkdir(parents=True)
    for name in ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors", "config.json",
                 "tokenizer.json", "tokenizer.model", "sub/extra.json", "pytorch_model.bin", "README.md"):
        (d / name).write_bytes(name.encode())
    req = modelfile_to_create(parse_modelfile("FROM hf"), base_dir=tmp_path)
    assert sorted(req["files"]) == ["config.json", "model-00001-of-00002.safetensors",
                                    "model-00002-of-00002.safetensors", "sub/extra.json", "tokenizer.json",
                                    "tokenizer.model"]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InvalidArgument):
        modelfile_to_create(parse_modelfile("FROM empty"), base_dir=tmp_path)


def test_to_create_blob_digests():
    h = "ab" * 32
    req = modelfile_to_create(parse_modelfile(f"FROM @sha256:{h}\nADAPTER @sha256-{h.upper()}\n"))
    assert req == {"files": {f"sha256-{h}.gguf": f"sha256:{h}"},
                   "adapters": {f"sha256-{h.upper()}.gguf": f"sha256:{h.upper()}"}}
    assert modelfile_to_create(parse_modelfile("FROM @sha256:abc")) == {"from": "@sha256:abc"}


# --- validate_options -----------------------------------------------------------------------------------

def test_validate_options_ok():
    opts = {"temperature": 1, "top_p": 0.5, "num_ctx": 2048.0, "num_predict": 7.9, "use_mmap": False,
            "stop": ["a", "b"], "seed": None, "bogus": "ignored", "mirostat": 1}
    assert validate_options(opts) == {"temperature": 1.0, "top_p": 0.5, "num_ctx": 2048, "num_predict": 7,
                                      "use_mmap": False, "stop": ["a", "b"]}
    assert validate_options(None) == {} and validate_options({}) == {}


@pytest.mark.parametrize(
    "key, value, kind",
    [
        ("num_ctx", "2048", "integer"),
        ("num_ctx", True, "integer"),
        ("seed", [1], "integer"),
        ("temperature", "0.5", "float32"),
        ("temperature", False, "float32"),
        ("use_mmap", 1, "boolean"),
        ("use_mmap", "true", "boolean"),
        ("stop", "</s>", "array"),
        ("stop", [1, 2], "array of strings"),
    ],
)
def test_validate_options_errors(key, value, kind):
    with pytest.raises(InvalidArgument) as e:
        validate_options({key: value})
    assert e.value.message == f'option "{key}" must be of type {kind}'


def test_parameter_types_cover_spec():
    assert set(PARAMETER_TYPES) == {
        "num_keep", "seed", "num_predict", "top_k", "top_p", "min_p", "typical_p", "repeat_last_n",
        "temperature", "repeat_penalty", "presence_penalty", "frequency_penalty", "stop", "num_ctx",
        "num_batch", "num_gpu", "main_gpu", "use_mmap", "num_thread", "draft_num_predict"}


# --- printing -------------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "value, expected",
    [
        ("plain", "plain"),
        ("<|eot_id|>", "<|eot_id|>"),
        ('has "quotes"', 'has "quotes"'),
        ("two\nlines", '"two\nlines"'),
        (" lead", '" lead"'),
        ("trail ", '"trail "'),
        ('say "hi"\nthen', '"""say "hi"\nthen"""'),
        ("", ""),
    ],
)
def test_quote(value, expected):
    assert quote(value) == expected


@pytest.mark.parametrize(
    "params, expected",
    [
        ({"temperature": 0.7}, "temperature                    0.7"),
        ({"num_ctx": 4096}, "num_ctx                        4096"),
        ({"num_ctx": 4096.0}, "num_ctx                        4096"),
        ({"num_ctx": 1000000}, "num_ctx                        1e+06"),  # Go %#v of a JSON float64
        ({"top_p": 1e-05}, "top_p                          1e-05"),
        ({"top_p": 0.0001}, "top_p                          0.0001"),
        ({"seed": -1}, "seed                           -1"),
        ({"use_mmap": True}, "use_mmap                       true"),
        ({"stop": ["<|eot_id|>", 'a "b"\n']},
         'stop                           "<|eot_id|>"\nstop                           "a \\"b\\"\\n"'),
        ({"stop": ["tab\there\x01☃"]}, 'stop                           "tab\\there\\x01☃"'),
        ({"a_very_long_parameter_name_over_30": 1}, "a_very_long_parameter_name_over_30 1"),
        ({}, ""),
    ],
)
def test_format_parameters(params, expected):
    assert format_parameters(params) == expected


def test_format_show_modelfile():
    text = format_show_modelfile(
        "llama3.2:latest", "/m/blobs/sha256-aa", ["/m/blobs/sha256-bb"], ["/m/blobs/sha256-cc"],
        "{{ .System }}\n{{ .Prompt }}", "Be brief.", {"stop": ["<|eot_id|>", "</s>"], "temperature": 0.5},
        ["MIT License\nCopyright", "short"], [{"role": "user", "content": "hi"}],
    )
    assert text == (
        '# Modelfile generated by "ollama show"\n'
        "# To build a new Modelfile based on this, replace FROM with:\n"
        "# FROM llama3.2:latest\n"
        "\n"
        "FROM /m/blobs/sha256-aa\n"
        "ADAPTER /m/blobs/sha256-bb\n"
        "FROM /m/blobs/sha256-cc\n"
        'TEMPLATE "{{ .System }}\n{{ .Prompt }}"\n'
        "SYSTEM Be brief.\n"
        "PARAMETER stop <|eot_id|>\n"
        "PARAMETER stop </s>\n"
        "PARAMETER temperature 0.5\n"
        'LICENSE "MIT License\nCopyright"\n'
        "LICENSE short\n"
        "MESSAGE user hi\n"
    )
    bare = format_show_modelfile("x:latest", "/p", [], [], None, "", {}, [], [])
    assert bare.endswith("\n\nFROM /p\n")


def test_show_modelfile_parses_back():
    text = format_show_modelfile("x:latest", "/p", [], [], "{{ .Prompt }}", 'say "hi"\n', {"num_ctx": 8192},
                                 [], [{"role": "assistant", "content": " ok "}])
    req = modelfile_to_create(parse_modelfile(text))
    assert req == {"from": "/p", "template": "{{ .Prompt }}", "system": 'say "hi"\n',
                   "parameters": {"num_ctx": 8192}, "messages": [{"role": "assistant", "content": " ok "}]}


# Values Ollama's own quote()/parse pair round-trips: printable text (spaces, newlines, quotes allowed),
# not empty, not starting with a quote, no triple quote, no tabs or CR (quote() does not protect them).
_text = st.text(st.characters(codec="utf-8", categories=("L", "N", "P", "S", "Zs"), exclude_characters="\t\r\x85")
                | st.sampled_from(["\n", '"', " "]), min_size=1, max_size=40)
_value = _text.filter(lambda s: not s.startswith('"') and '"""' not in s and s.strip(" \n") != ""
                      and all(c.isprintable() or c in " \n" for c in s))
_f32 = st.floats(width=32, allow_nan=False, allow_infinity=False).map(float32_value)


@settings(max_examples=300, deadline=None, database=None)
@given(system=_value, template=_value, stops=st.lists(_value, max_size=3), lic=st.lists(_value, max_size=2),
       msg=_value, temperature=_f32,
       num_ctx=st.integers(-999_999, 999_999))
def test_round_trip(system, template, stops, lic, msg, temperature, num_ctx):
    params = {"temperature": temperature, "num_ctx": num_ctx}
    if stops:
        params["stop"] = stops
    text = format_show_modelfile("m:latest", "/blobs/sha256-x", [], [], template, system, params, lic,
                                 [{"role": "user", "content": msg}])
    req = modelfile_to_create(parse_modelfile(text))
    assert req["template"] == template and req["system"] == system
    assert req.get("license", []) == lic
    assert req["messages"] == [{"role": "user", "content": msg}]
    assert req["parameters"] == params
