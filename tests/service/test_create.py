"""create (spec §5): sources, layer typing, inheritance, status lines, layer order, config bytes, pruning,
the quantizer, legacy Modelfile, and every validation error (raised before the first line).

Why: create's stream and the bytes it writes are what Ollama clients and Ollama itself would see; the
blobs it writes must hash like Ollama's so that layers are shared, and a failed create must not leave a
half-made model behind.
"""

import json
from dataclasses import replace

import pytest

from corral.service.create import build_creator
from corral.service.show import show
from corral.store.errors import Internal, InvalidArgument, NotFound
from corral.store.manifests import (
    MEDIA_TYPE_ADAPTER,
    MEDIA_TYPE_MESSAGES,
    MEDIA_TYPE_MODEL,
    MEDIA_TYPE_PARAMS,
    MEDIA_TYPE_PROJECTOR,
    MEDIA_TYPE_TEMPLATE,
)
from tests.gguf_models import write_llama_gguf
from tests.store.store_helpers import (  # noqa: F401
    blob_names,
    create,
    creator,
    llama_blob,
    lora_blob,
    make_model,
    manifest_path,
    no_registry,
    projector_blob,
    store,
    upload,
)

LIB = ("registry.ollama.ai", "library")


def manifest(store, model, tag="latest", ns="library"):
    return json.loads(manifest_path(store, "registry.ollama.ai", ns, model, tag).read_bytes())


def types(m):
    return [layer["mediaType"].rsplit(".", 1)[1] for layer in m["layers"]]


def blob_text(store, digest):
    return store.blobs.path(digest).read_bytes()


def test_from_files_stream_manifest_and_config(store, tmp_path):
    digest = llama_blob(store, tmp_path)
    lines = create(store, {"model": "tiny", "files": {"model.gguf": digest}})
    m = manifest(store, "tiny")
    assert lines == ["parsing GGUF", f"using existing layer {digest}", "writing manifest", "success"]
    assert m["layers"] == [{"mediaType": MEDIA_TYPE_MODEL, "digest": digest, "size": store.blobs.size(digest)}]
    info = store.gguf(digest)
    from corral.store.gguf_info import human_parameter_count

    expected_config = ('{"model_format":"gguf","model_family":"llama","model_families":["llama"],'
                       f'"model_type":"{human_parameter_count(info.parameter_count)}","file_type":"F32",'
                       '"architecture":"amd64","os":"linux",'
                       f'"rootfs":{{"type":"layers","diff_ids":["{digest}"]}}}}\n').encode()
    assert blob_text(store, m["config"]["digest"]) == expected_config
    assert m["config"]["size"] == len(expected_config)


def test_files_are_typed_by_general_type(store, tmp_path):
    model, proj, lora = llama_blob(store, tmp_path), projector_blob(store, tmp_path), lora_blob(store, tmp_path)
    lines = create(store, {"model": "v", "files": {"model.gguf": model, "mmproj": proj},
                           "adapters": {"adapter.gguf": lora}})
    assert lines[:3] == ["parsing GGUF"] * 3
    m = manifest(store, "v")
    assert [(l["mediaType"], l["digest"]) for l in m["layers"]] == [
        (MEDIA_TYPE_MODEL, model), (MEDIA_TYPE_PROJECTOR, proj), (MEDIA_TYPE_ADAPTER, lora)]
    config = json.loads(blob_text(store, m["config"]["digest"]))
    assert config["model_family"] == "llama" and config["model_families"] == ["llama", "clip", "llama"]
    create(store, {"model": "v2", "files": {"zz-mmproj": proj, "a-model.gguf": model},  # order of keys
                   "adapters": {"adapter.gguf": lora}})                                 # does not matter
    assert manifest(store, "v2") == m


def test_text_layers_order_and_blob_bytes(store, tmp_path):
    lines = make_model(store, tmp_path, "full", template="T <x>", system="S", license="L",
                       parameters={"temperature": 0.7, "stop": ["<|eot|>"], "num_ctx": 4096.0},
                       messages=[{"role": "user", "content": "a&b"}])
    m = manifest(store, "full")
    assert types(m) == ["model", "template", "system", "license", "params", "messages"]
    by_type = {l["mediaType"]: l["digest"] for l in m["layers"]}
    assert blob_text(store, by_type[MEDIA_TYPE_TEMPLATE]) == b"T <x>"
    assert blob_text(store, by_type[MEDIA_TYPE_PARAMS]) == \
        b'{"num_ctx":4096,"stop":["\\u003c|eot|\\u003e"],"temperature":0.7}\n'
    assert blob_text(store, by_type[MEDIA_TYPE_MESSAGES]) == b'[{"role":"user","content":"a\\u0026b"}]\n'
    assert lines[-2:] == ["writing manifest", "success"]
    assert all(line.startswith("creating new layer sha256:") for line in lines[2:7])


def test_from_model_inherits_and_replaces(store, tmp_path):
    make_model(store, tmp_path, "base", template="T1", system="S1", license=["L1"],
               parameters={"top_k": 10, "stop": ["x"]}, messages=[{"role": "user", "content": "m1"}])
    base = manifest(store, "base")
    lines = create(store, {"model": "child", "from": "BASE", "system": "S2", "license": "L2",
                           "parameters": {"top_k": 20, "seed": 1}})
    child = manifest(store, "child")
    assert types(child) == ["model", "template", "license", "messages", "system", "license", "params"]
    inherited = child["layers"][:4]
    assert all(l["from"] == "base:latest" for l in inherited)
    assert [l["digest"] for l in inherited] == [base["layers"][i]["digest"] for i in (0, 1, 3, 5)]
    assert "from" not in child["layers"][4] and "from" not in child["layers"][6]
    params = child["layers"][6]["digest"]
    assert blob_text(store, params) == b'{"seed":1,"stop":["x"],"top_k":20}\n'
    assert lines[:4] == [f"using existing layer {l['digest']}" for l in inherited]
    assert lines[4:7] == [f"creating new layer {l['digest']}" for l in child["layers"][4:]]
    assert lines[7:] == ["writing manifest", "success"]
    shown = show(store, "child")
    assert shown["details"]["parent_model"] == "base:latest"
    assert shown["license"] == "L1\nL2" and shown["system"] == "S2" and shown["template"] == "T1"


def test_from_model_without_changes_reuses_everything(store, tmp_path):
    make_model(store, tmp_path, "base", parameters={"top_k": 1})
    lines = create(store, {"model": "same", "from": "base"})
    assert all(line.startswith("using existing layer") for line in lines[:-2])
    same = manifest(store, "same")
    assert same["layers"][0]["from"] == "base:latest"
    assert "from" not in same["layers"][1]  # params are always re-appended as a layer of this model
    assert same["layers"][1]["digest"] == manifest(store, "base")["layers"][1]["digest"]


def test_overwrite_prunes_old_blobs_unless_noprune(store, tmp_path, monkeypatch):
    make_model(store, tmp_path, "m", system="old system")
    old_system = manifest(store, "m")["layers"][1]["digest"]
    make_model(store, tmp_path, "M", system="new system")  # case variant: same manifest file
    assert not store.blobs.has(old_system)
    assert [e["name"] for e in store.list_models()] == ["m:latest"]
    monkeypatch.setenv("OLLAMA_NOPRUNE", "1")
    newer = manifest(store, "m")["layers"][1]["digest"]
    make_model(store, tmp_path, "m", system="third system")
    assert store.blobs.has(newer)


def test_replaced_layers_are_dropped_even_with_noprune(store, tmp_path, monkeypatch):
    monkeypatch.setenv("OLLAMA_NOPRUNE", "true")
    make_model(store, tmp_path, "m", system="one")
    old = manifest(store, "m")
    create(store, {"model": "m", "from": "m", "system": "two"})
    assert not store.blobs.has(old["layers"][1]["digest"])  # the replaced system layer goes anyway
    assert store.blobs.has(old["config"]["digest"])  # the overwritten manifest's other orphans stay


def test_validation_errors_raise_before_the_first_line(store, creator, tmp_path):
    digest = llama_blob(store, tmp_path)
    text = upload(store, _write(tmp_path / "notes.txt", b"just text"))
    text_gguf = upload(store, _write(tmp_path / "fake.gguf", b"not a gguf at all"))
    missing = "sha256:" + "e" * 64
    q8 = upload(store, write_llama_gguf(tmp_path / "q8.gguf", file_type=False, extra_kv={"general.file_type": 7}))
    cases = [
        ({"model": ""}, InvalidArgument, "invalid model name"),
        ({"model": "a/b/c/d", "files": {"m.gguf": digest}}, InvalidArgument, "invalid model name"),
        ({"model": "x"}, InvalidArgument, "neither 'from' or 'files' was specified"),
        ({"model": "x", "files": None}, InvalidArgument, "neither 'from' or 'files' was specified"),
        ({"model": "x", "from": "bad name"}, InvalidArgument, "invalid model name"),
        ({"model": "x", "files": {"/abs.gguf": digest}}, InvalidArgument, "file path must be relative"),
        ({"model": "x", "files": {"../up.gguf": digest}}, InvalidArgument, "file path must be relative"),
        ({"model": "x", "files": {"a//b.gguf": digest}}, InvalidArgument, "file path must be relative"),
        ({"model": "x", "files": {"dir/": digest}}, InvalidArgument, "file path must be relative"),
        ({"model": "x", "files": {"m.gguf": ""}}, InvalidArgument, "invalid digest format"),
        ({"model": "x", "files": {"m.gguf": "sha256:123"}}, InvalidArgument, "invalid digest format"),
        ({"model": "x", "files": {"m.gguf": missing}}, Internal,
         f"open {store.blobs.path(missing)}: no such file or directory"),
        ({"model": "x", "files": {}}, InvalidArgument, "unknown type"),
        ({"model": "x", "files": {"notes.txt": text}}, InvalidArgument, "unknown type"),
        ({"model": "x", "files": {"fake.gguf": text_gguf}}, InvalidArgument,
         "supplied file was not in GGUF format"),
        ({"model": "x", "files": {"model.safetensors": text}}, InvalidArgument, "unknown architecture"),
        ({"model": "x", "files": {"m.gguf": digest}, "adapters": {"a.gguf": digest, "b.gguf": digest}},
         InvalidArgument, "only one adapter is currently supported"),
        ({"model": "x", "files": {"m.gguf": digest}, "quantize": "q9_x"}, InvalidArgument,
         "unsupported quantization type Q9_X - supported types are F32, F16, BF16, Q8_0, Q6_K, Q5_K_M, Q5_K_S, "
         "Q5_1, Q5_0, Q4_K_M, Q4_K_S, Q4_1, Q4_0, Q3_K_L, Q3_K_M, Q3_K_S, Q2_K"),
        ({"model": "x", "files": {"m.gguf": q8}, "quantization": "q4_k_m"}, Internal,
         "quantization is only supported for F16, BF16 and F32 models"),
        ({"model": "x", "modelfile": "SYSTEM hi"}, InvalidArgument, "no FROM line"),
    ]
    for req, error, message in cases:
        with pytest.raises(error) as err:
            creator.create(req)  # raises on the call itself, before any line is produced
        assert err.value.message == message, req
    assert store.list_models() == []


def test_quantizer(store, creator, tmp_path):
    f16 = upload(store, write_llama_gguf(tmp_path / "f16.gguf", dtype="f16"))
    calls, outs = [], []

    def hook(src, dst, dst_type, cancel):
        calls.append((src, dst_type))
        outs.append(dst)
        yield {"status": f"quantizing F16 model to {dst_type}"}
        yield {"status": "verifying conversion"}
        write_llama_gguf(dst, dtype="f32")

    lines = [line["status"] for line in replace(creator, quantize=hook).create(
        {"model": "q", "files": {"m.gguf": f16}, "quantize": "f32"})]
    assert calls == [(store.blobs.path(f16), "F32")]
    new = manifest(store, "q")["layers"][0]["digest"]
    assert lines == ["parsing GGUF", "quantizing F16 model to F32", "verifying conversion",
                     f"creating new layer {new}", "writing manifest", "success"]
    assert json.loads(blob_text(store, manifest(store, "q")["config"]["digest"]))["file_type"] == "F32"
    assert outs[0].parent == store.paths.blobs_dir and not outs[0].exists()
    lines = [line["status"] for line in replace(creator, quantize=hook).create(
        {"model": "same", "files": {"m.gguf": f16}, "quantize": "F16"})]  # already F16
    assert "verifying conversion" not in lines and len(calls) == 1

    def generator_hook(src, dst, dst_type, cancel):  # the service's quantizer reports progress as it goes
        yield {"status": f"quantizing F16 model to {dst_type}", "digest": "0" * 19, "total": 2, "completed": 2}
        yield {"status": "verifying conversion"}
        write_llama_gguf(dst, dtype="f32", seed=1)

    stream = list(replace(creator, quantize=generator_hook).create(
        {"model": "g", "files": {"m.gguf": f16}, "quantize": "F32"}))
    new = manifest(store, "g")["layers"][0]["digest"]
    assert stream[1] == {"status": "quantizing F16 model to F32", "digest": "0" * 19, "total": 2, "completed": 2}
    assert [line["status"] for line in stream[2:]] == [
        "verifying conversion", f"creating new layer {new}", "writing manifest", "success"]


def test_missing_base_is_pulled_inside_the_stream(store, tmp_path):
    make_model(store, tmp_path, "staging")

    def pull(name, insecure, cancel):
        assert name == "registry.ollama.ai/library/remote:latest"
        yield {"status": "pulling manifest"}
        store.copy("staging", "remote")
        yield {"status": "success"}

    lines = create(store, {"model": "local", "from": "remote"}, pull=pull)
    assert lines[:2] == ["pulling manifest", "success"]
    assert lines[-2:] == ["writing manifest", "success"]
    assert manifest(store, "local")["layers"][0]["from"] == "remote:latest"

    def failing_pull(name, insecure, cancel):
        yield {"status": "pulling manifest"}

    stream = build_creator(store, pull=failing_pull).create({"model": "x", "from": "other"})
    assert next(stream) == {"status": "pulling manifest"}
    with pytest.raises(NotFound) as err:
        next(stream)
    assert err.value.message == "pull model manifest: file does not exist"


def test_legacy_modelfile(store, tmp_path):
    digest = llama_blob(store, tmp_path)
    create(store, {"model": "a", "modelfile": f"FROM @{digest}\nSYSTEM from a modelfile\nPARAMETER top_k 3"})
    assert show(store, "a")["system"] == "from a modelfile"
    create(store, {"model": "b", "modelfile": "FROM a\nTEMPLATE {{ .Prompt }}!"})
    assert show(store, "b")["template"] == "{{ .Prompt }}!"
    assert store.model_spec("b").params == {"top_k": 3}
    create(store, {"model": "c", "from": "a", "modelfile": "FROM b"})  # `from` wins over a modelfile
    assert show(store, "c")["template"] == "{{ .Prompt }}"


def test_template_validation(store, creator, tmp_path):
    def validate(text):
        if "{{" in text and "}}" not in text:
            raise InvalidArgument("template error: unclosed action")

    with pytest.raises(InvalidArgument) as err:
        replace(creator, validate_template=validate).create(
            {"model": "t", "files": {"model.gguf": llama_blob(store, tmp_path)}, "template": "{{ .Prompt"})
    assert err.value.message == "template error: unclosed action"


def test_pins_protect_blobs_from_a_concurrent_delete(store, creator, tmp_path):
    make_model(store, tmp_path, "base", system="only the base has this")
    stream = creator.create({"model": "child", "from": "base", "license": "x"})
    first = next(stream)  # layers are built and pinned before the first status line
    assert first["status"].startswith("using existing layer")
    store.delete("base")  # would prune every base blob but for the pins
    assert [line["status"] for line in stream][-1] == "success"
    m = manifest(store, "child")
    assert all(store.blobs.has(d) for d in [l["digest"] for l in m["layers"]] + [m["config"]["digest"]])
    store.delete("child")
    assert store.blobs.all_digests() == set()


def _write(path, data):
    path.write_bytes(data)
    return path


def test_messages_and_license_edge_cases(store, creator, tmp_path):
    make_model(store, tmp_path, "m", license=["", "only"], messages=[])
    assert types(manifest(store, "m")) == ["model", "license"]
    assert show(store, "m")["license"] == "only"
    with pytest.raises(InvalidArgument):
        creator.create({"model": "x", "from": "m", "license": 5})
