"""Name grammar (spec §2): parsing, defaults, validity, display form, case, and Go-style quoting.

Why: every endpoint starts with a name, and clients see exactly which names are rejected and how names
are displayed. The table mirrors Ollama's types/model/name_test.go cases.
"""

import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from corral.store.errors import InvalidArgument
from corral.store.gocompat import go_quote
from corral.store.names import Name, is_valid_part, name_from_parts, parse_name, require_name

H, NS, T = "registry.ollama.ai", "library", "latest"

PARSE_CASES = [
    # text, (host, namespace, model, tag), valid
    ("llama3", (H, NS, "llama3", T), True),
    ("llama3:8b", (H, NS, "llama3", "8b"), True),
    ("llama3.2:3b-instruct-q4_K_M", (H, NS, "llama3.2", "3b-instruct-q4_K_M"), True),
    ("user/model", (H, "user", "model", T), True),
    ("user/model:tag", (H, "user", "model", "tag"), True),
    ("example.com/user/model:tag", ("example.com", "user", "model", "tag"), True),
    ("localhost:5000/ns/m", ("localhost:5000", "ns", "m", T), True),
    ("localhost:5000/ns/m:v1", ("localhost:5000", "ns", "m", "v1"), True),
    ("https://example.com/ns/m:t", ("example.com", "ns", "m", "t"), True),
    ("hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M",
     ("hf.co", "bartowski", "Llama-3.2-1B-Instruct-GGUF", "Q4_K_M"), True),
    ("_model:_tag", (H, NS, "_model", "_tag"), True),
    ("Llama3:LATEST", (H, NS, "Llama3", "LATEST"), True),
    ("", (H, NS, "", T), False),
    ("model:", (H, NS, "model", "!MISSING!"), False),
    (":tag", (H, NS, "!MISSING!", "tag"), False),
    ("/model", (H, "!MISSING!", "model", T), False),
    ("ns/", (H, "ns", "!MISSING!", T), False),
    ("host//model", ("host", "!MISSING!", "model", T), False),
    ("a/b/c/d", ("a/b", "c", "d", T), False),
    ("model@sha256:abc", (H, NS, "model@sha256", "abc"), False),
    ("model:tag@sha256", (H, NS, "model", "tag@sha256"), False),
    ("ns.dot/model", (H, "ns.dot", "model", T), False),
    ("-model", (H, NS, "-model", T), False),
    (".model", (H, NS, ".model", T), False),
    ("model:-tag", (H, NS, "model", "-tag"), False),
    ("mödel", (H, NS, "mödel", T), False),
    ("model name", (H, NS, "model name", T), False),
    ("ns/mo:del/x", ("ns", "mo:del", "x", T), False),  # a ':' before the last '/' is not a tag separator
    ("http://m", ("http:", "!MISSING!", "m", T), False),
]


@pytest.mark.parametrize("text,parts,valid", PARSE_CASES)
def test_parse_table(text, parts, valid):
    name = parse_name(text)
    assert name.parts == parts
    assert name.is_valid() is valid


LENGTH_CASES = [
    ("host", 350, True), ("host", 351, False),
    ("namespace", 80, True), ("namespace", 81, False),
    ("model", 80, True), ("model", 81, False),
    ("tag", 80, True), ("tag", 81, False),
    ("model", 0, False),
]


@pytest.mark.parametrize("kind,length,valid", LENGTH_CASES)
def test_part_lengths(kind, length, valid):
    assert is_valid_part(kind, "a" * length) is valid


@pytest.mark.parametrize("kind,char,valid", [
    ("host", ".", True), ("host", ":", True), ("host", "-", True),
    ("namespace", ".", False), ("namespace", ":", False), ("namespace", "-", True),
    ("model", ".", True), ("model", ":", False), ("model", "-", True), ("model", "+", False),
    ("tag", ".", True), ("tag", ":", False), ("tag", "_", True), ("tag", "/", False),
])
def test_part_later_characters(kind, char, valid):
    assert is_valid_part(kind, "a" + char + "b") is valid


def test_defaults_and_scheme():
    assert parse_name("m") == Name(H, NS, "m", T, "https")
    assert parse_name("http://host/ns/m").scheme == "http"
    assert parse_name("http://host/ns/m").host == "host"


@pytest.mark.parametrize("text,display", [
    ("llama3", "llama3:latest"),
    ("llama3:8b", "llama3:8b"),
    ("user/model", "user/model:latest"),
    ("library/model:x", "model:x"),
    ("REGISTRY.OLLAMA.AI/LIBRARY/m", "m:latest"),  # default checks ignore case
    ("registry.ollama.ai/Library/M:T", "M:T"),
    ("registry.ollama.ai/user/m", "user/m:latest"),
    ("example.com/library/m", "example.com/library/m:latest"),
    ("localhost:5000/ns/m:v", "localhost:5000/ns/m:v"),
])
def test_display(text, display):
    assert parse_name(text).display == display


def test_full_repository_parts_and_str():
    name = parse_name("user/model:tag")
    assert name.full == "registry.ollama.ai/user/model:tag"
    assert str(name) == name.full
    assert name.repository == "user/model"
    assert name.parts == (H, "user", "model", "tag")


def test_case_is_kept():
    assert parse_name("Llama3.2:LATEST").parts == (H, NS, "Llama3.2", "LATEST")


def test_require_name():
    assert require_name("m").model == "m"
    with pytest.raises(InvalidArgument) as err:
        require_name("a/b/c/d")
    assert err.value.message == "invalid model name"
    with pytest.raises(InvalidArgument) as err:
        require_name("", "model is required")
    assert err.value.message == "model is required"


def test_name_from_parts():
    assert name_from_parts(("h", "n", "m", "t")) == Name("h", "n", "m", "t")
    assert name_from_parts(("h", "n", "m")) is None
    assert name_from_parts(("h", "n", "m", ".tmp-t-1")) is None


@pytest.mark.parametrize("text,quoted", [
    ("x", '"x"'), ("", '""'), ('a"b', '"a\\"b"'), ("a\\b", '"a\\\\b"'), ("a\nb", '"a\\nb"'),
    ("\x01", '"\\x01"'), ("é", '"é"'), ("\u200b", '"\\u200b"'),
])
def test_go_quote(text, quoted):
    assert go_quote(text) == quoted


_FIRST = string.ascii_letters + string.digits + "_"
_part = st.text(alphabet=_FIRST, min_size=1, max_size=1)


@given(
    model=st.tuples(_part, st.text(alphabet=_FIRST + ".-", max_size=79)).map("".join),
    tag=st.tuples(_part, st.text(alphabet=_FIRST + ".-", max_size=79)).map("".join),
    namespace=st.tuples(_part, st.text(alphabet=_FIRST + "-", max_size=79)).map("".join),
    host=st.tuples(_part, st.text(alphabet=_FIRST + ".-:", max_size=60)).map("".join),
)
def test_round_trip_property(model, tag, namespace, host):
    """Any valid parts survive full -> parse -> display -> parse unchanged (up to default casing)."""
    name = Name(host, namespace, model, tag)
    assert name.is_valid()
    assert parse_name(name.full) == name
    again = parse_name(name.display)
    assert again.is_valid()
    assert (again.model, again.tag) == (model, tag)
    assert again.display == name.display


@given(st.text(max_size=120))
def test_parse_never_raises_and_valid_names_are_path_safe(text):
    name = parse_name(text)
    if name.is_valid():
        for part in name.parts:
            assert "/" not in part and not part.startswith(".") and part.isascii()
        assert parse_name(name.full).parts == name.parts
