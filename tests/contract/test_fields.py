"""Every request field is read by the service and every response field set, or listed with its reason.

The list is service/api/unused_fields.py; each listed field's comment in the proto says the same
("Unused: <reason>"). tests/contract/fieldcheck.py says what counts as reading and setting.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool

from corral.protos.ollama.v1 import ollama_pb2 as pb
from corral.service.api.unused_fields import UNUSED_FIELDS
from tests.contract import fieldcheck as fc

ROOT = Path(__file__).resolve().parents[2]
SERVICE = ROOT / "service"
PROTO = ROOT / "protos/ollama/v1/ollama.proto"
OWN_LIST = SERVICE / "api/unused_fields.py"  # its strings are no evidence of use


def message_names(file_descriptor) -> set[str]:
    return set(file_descriptor.message_types_by_name)


@pytest.fixture(scope="module")
def evidence() -> fc.Evidence:
    return fc.scan_tree(SERVICE, message_names(pb.DESCRIPTOR), exclude=(OWN_LIST,))


def test_request_fields_read_and_response_fields_set(evidence):
    report = fc.check(pb.DESCRIPTOR.services_by_name["Ollama"], evidence, UNUSED_FIELDS)
    assert report.ok, "\n" + report.message()


def test_unused_fields_reasons_are_given():
    blank = sorted(name for name, reason in UNUSED_FIELDS.items() if not reason.strip())
    assert not blank, f"entries without a reason: {blank}"


# -- the proto's comments say the same as the list ---------------------------------------------------


def field_comments(text: str, package: str) -> dict[str, str]:
    """Full field name -> its leading // comment (lines joined by spaces), for every field in a .proto."""
    comments, scope, pending = {}, [], []
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("//"):
            pending.append(line[2:].strip())
            continue
        line = line.split("//", 1)[0]
        block = re.match(r"(message|enum|oneof|service)\s+(\w+)\s*\{", line)
        field = re.match(r"(?:optional\s+|repeated\s+)?(?:map\s*<[^>]*>|[\w.]+)\s+(\w+)\s*=\s*\d+", line)
        if field and not block:
            names = [s for s in scope if s is not None]  # oneof members are fields of the message
            if names:
                comments[".".join([package, *names, field.group(1)])] = " ".join(pending)
        label = block.group(2) if block and block.group(1) == "message" else None
        for ch in line:  # every brace, also those of option values and one-line `message X {}`
            if ch == "{":
                scope.append(label)
                label = None
            elif ch == "}" and scope:
                scope.pop()
        pending = []
    return comments


def test_field_comment_parser():
    text = """
    message Empty {}
    service S {
      rpc M(Empty) returns (Empty) {
        option (google.api.http) = {get: "/a/{x}" additional_bindings {custom: {kind: "HEAD" path: "/a"}}};
      }
    }
    message A {
      // First line
      // second line.
      optional string x = 1;
      map<string, string> files = 2;
      message B {
        // Nested.
        repeated int32 y = 1 [packed = true];
      }
      oneof kind {
        // In a oneof.
        string z = 3;
      }
    }
    """
    assert field_comments(text, "p") == {
        "p.A.x": "First line second line.", "p.A.files": "", "p.A.B.y": "Nested.", "p.A.z": "In a oneof.",
    }


def test_proto_comments_match_the_list():
    comments = field_comments(PROTO.read_text(encoding="utf-8"), pb.DESCRIPTOR.package)
    every_field = {f.full_name for m in pb.DESCRIPTOR.message_types_by_name.values() for f in m.fields}
    assert set(comments) == every_field, "the comment parser missed fields (or found ones that are not)"
    problems = []
    for name, reason in sorted(UNUSED_FIELDS.items()):
        if name not in comments:
            problems.append(f"{name}: no such field in {PROTO.name}")
        elif f"Unused: {reason}" not in comments[name]:
            problems.append(f'{name}: its proto comment must say "Unused: {reason}"')
    for name, comment in sorted(comments.items()):
        if "Unused:" in comment and name not in UNUSED_FIELDS:
            problems.append(f'{name}: its proto comment says "Unused:" but service/api/unused_fields.py does '
                            "not list it")
    assert not problems, "\n".join(problems)


# -- the checker itself, on synthetic cases ----------------------------------------------------------


FDP = descriptor_pb2.FieldDescriptorProto


def synthetic_service(request: list[str], response: list[str], inner: list[str] = ()):
    """Service synth.S with one rpc, Req -> Resp. Fields are strings; "name:Inner" is a field of message
    type Inner (whose fields are `inner`), to test reachability."""
    proto = descriptor_pb2.FileDescriptorProto(name="synth.proto", package="synth", syntax="proto3")
    for name, fields in (("Req", request), ("Resp", response), ("Inner", inner)):
        msg = proto.message_type.add(name=name)
        for number, spec in enumerate(fields, 1):
            fname, _, type_name = spec.partition(":")
            if type_name:
                msg.field.add(name=fname, number=number, type=FDP.TYPE_MESSAGE, type_name=".synth." + type_name,
                              label=FDP.LABEL_OPTIONAL)
            else:
                msg.field.add(name=fname, number=number, type=FDP.TYPE_STRING, label=FDP.LABEL_OPTIONAL)
    proto.service.add(name="S").method.add(name="M0", input_type=".synth.Req", output_type=".synth.Resp")
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(proto.SerializeToString())
    return pool.FindServiceByName("synth.S")


SYNTH_CODE = '''
FIELDS = ("listed_a", "listed_b")

def _optional(message, name="by_default"):
    return getattr(message, name) if message.HasField(name) else None

def _twice(msg, key):
    return _optional(msg, key)

class Servicer:
    def M0(self, request, context):
        x = request.plain
        y = getattr(request, "via_getattr")
        if request.HasField("via_hasfield"):
            pass
        z = _optional(request, "via_helper")
        w = _twice(request, name_nothing)
        v = _twice(request, "via_helper_of_helper")
        d = _optional(request)
        for key in ("loop_a", "loop_b"):
            getattr(request, key)
        for key in FIELDS:
            getattr(request, key)
        got = {k: getattr(request, k) for k in ["comp_a"]}
        out = pb.Resp(kw_set=x, **{"splat_set": 1})
        extra = {"var_splat": 2}
        extra["var_item"] = 3
        pb.Resp(**extra)
        out.attr_set = 1
        out.copied.CopyFrom(y)
        out.copied_inner.CopyFrom(y)
        out.listed.extend([1])
        out.mapped["k"] = "v"
        setattr(out, "via_setattr", 1)
        ParseDict({"parsed": 1}, out)
        pb.Inner(inner_kw=1)
        self.own_state = request.plain
        return self.own_read
'''


def synthetic_check(request, response, inner=(), ignored=None, code=SYNTH_CODE):
    service = synthetic_service(request, response, inner)
    evidence = fc.scan_sources({"synth.py": code}, set(service.file.message_types_by_name))
    return fc.check(service, evidence, ignored or {})


def test_checker_sees_every_kind_of_read():
    fields = ["plain", "via_getattr", "via_hasfield", "via_helper", "via_helper_of_helper", "by_default",
              "loop_a", "loop_b", "listed_a", "listed_b", "comp_a"]
    report = synthetic_check(fields, [])
    assert report.ok, report.message()


def test_checker_sees_every_kind_of_set():
    fields = ["kw_set", "splat_set", "var_splat", "var_item", "attr_set", "copied", "listed", "mapped",
              "via_setattr", "parsed", "copied_inner:Inner"]
    report = synthetic_check([], fields, ["inner_kw"])
    assert report.ok, report.message()


def test_checker_reports_a_new_unread_request_field():
    report = synthetic_check(["plain", "brand_new_knob"], [])
    assert report.unread == ["synth.Req.brand_new_knob"] and not report.unset
    assert "synth.Req.brand_new_knob" in report.message()


def test_checker_reports_unset_response_fields_also_nested():
    report = synthetic_check([], ["kw_set", "never", "copied_inner:Inner"], ["inner_kw", "deep"])
    assert report.unset == ["synth.Inner.deep", "synth.Resp.never"] and not report.unread


def test_an_objects_own_attributes_are_no_evidence():
    report = synthetic_check(["own_read"], ["own_state"])
    assert (report.unread, report.unset) == (["synth.Req.own_read"], ["synth.Resp.own_state"])


def test_constructor_keywords_count_for_their_message_only():
    # "inner_kw" is a keyword of pb.Inner(...) only: as a field of Resp it is not set.
    report = synthetic_check([], ["inner_kw"])
    assert report.unset == ["synth.Resp.inner_kw"]


def test_checker_honours_the_list_and_reports_stale_and_unknown_entries():
    ignored = {"synth.Req.brand_new_knob": "later", "synth.Req.plain": "but it is read", "synth.Req.gone": "x"}
    report = synthetic_check(["plain", "brand_new_knob"], [], ignored=ignored)
    assert (report.unread, report.stale, report.unknown) == ([], ["synth.Req.plain"], ["synth.Req.gone"])
    assert not report.ok


def test_a_field_added_to_the_real_api_and_never_read_fails(evidence):
    """The real check on the real service, with one new field in GenerateRequest and GenerateResponse."""
    pool = descriptor_pool.DescriptorPool()
    added: set[str] = set()

    def add(fd):
        if fd.name in added:
            return
        for dep in fd.dependencies:
            add(dep)
        proto = descriptor_pb2.FileDescriptorProto()
        fd.CopyToProto(proto)
        if fd.name == pb.DESCRIPTOR.name:
            for m in proto.message_type:
                if m.name in ("GenerateRequest", "GenerateResponse"):
                    m.field.add(name="brand_new_knob", number=99, type=descriptor_pb2.FieldDescriptorProto.TYPE_BOOL,
                                label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL)
        pool.AddSerializedFile(proto.SerializeToString())
        added.add(fd.name)

    add(pb.DESCRIPTOR)
    service = pool.FindServiceByName("ollama.v1.Ollama")
    report = fc.check(service, evidence, UNUSED_FIELDS)
    assert report.unread == ["ollama.v1.GenerateRequest.brand_new_knob"]
    assert report.unset == ["ollama.v1.GenerateResponse.brand_new_knob"]
    assert "ollama.v1.GenerateRequest.brand_new_knob" in report.message()


def test_a_bare_name_call_resolves_to_the_modules_own_function():
    helper = "def _optional(message, name):\n    return getattr(message, name)\n"
    other = "def _optional(cls, store):\n    return cls(store)\n\nx = _optional(Thing, 'not_a_read')\n"
    user = "from helpers import _optional\n\ny = _optional(request, 'a_read')\n"
    service = synthetic_service(["not_a_read", "a_read"], [])
    evidence = fc.scan_sources({"helpers.py": helper, "other.py": other, "user.py": user}, {"Req", "Resp"})
    assert fc.check(service, evidence, {}).unread == ["synth.Req.not_a_read"]
