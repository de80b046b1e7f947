"""`corral push`, `corral pull` and `corral run` of a model that is not local, against a real Debian
docker-registry on loopback: a tiny model is pushed from one Corral server, then pulled into a second one
with an empty store, and the progress the CLI draws (written to a pipe, so drawn once in its final state)
is checked line by line: steps in order, one bar per layer at 100% with its size.
"""

import json
import re

import grpc
import pytest

from corral.protos.ollama.v1 import ollama_pb2 as pb
from corral.protos.ollama.v1 import ollama_pb2_grpc as pb_grpc
from tests.cli.conftest import Cli, cli_env

BAR = re.compile(r"^(?P<verb>pulling|pushing) (?P<hex>[0-9a-f]{12}) +100% .*? (?P<done>[\d.,]+)/(?P<total>[\d.,]+) "
                 r"(?P<unit>bytes|kB|MB)\b")


@pytest.fixture
def other_server(tmp_path):
    """A second Corral gRPC server with its own empty store."""
    from corral.service.server import close_servicer, create_server
    from corral.store.models import ModelStore

    grpc_server, servicer, port = create_server(ModelStore(tmp_path / "other-models"), "127.0.0.1:0")
    grpc_server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield f"127.0.0.1:{port}", pb_grpc.OllamaStub(channel)
    finally:
        channel.close()
        grpc_server.stop(grace=None).wait()
        close_servicer(servicer)


def layers(root, name_parts) -> list[dict]:
    host, namespace, model, tag = name_parts
    manifest = json.loads((root / "manifests" / host / namespace / model / tag).read_text())
    return [*manifest["layers"], manifest["config"]]


def bars(stderr: str) -> dict[str, re.Match]:
    found = {}
    for line in stderr.splitlines():
        m = BAR.match(line)
        if m:
            found[m["hex"]] = m
    return found


def test_push_then_pull_and_run_from_a_registry(tiny, cli, registry, other_server):
    name = f"{registry.host}/team/tiny:v1"
    assert cli("cp", "tiny", name).returncode == 0
    pushed = cli("push", name, "--insecure")
    assert pushed.returncode == 0, pushed.stderr
    assert pushed.stdout == f"\nYou can find your model at:\n\n\t{name}\n"
    want = layers(tiny.root, (registry.host, "team", "tiny", "v1"))
    lines = pushed.stderr.splitlines()
    assert lines[0] == "retrieving manifest" and lines[-2:] == ["pushing manifest", "success"]
    found = bars(pushed.stderr)
    assert set(found) == {layer["digest"][7:19] for layer in want}
    assert all(m["verb"] == "pushing" and m["done"] == m["total"] for m in found.values())

    target, stub = other_server
    other = Cli(target, cli_env(target))
    pulled = other("pull", name, "--insecure")
    assert pulled.returncode == 0 and pulled.stdout == ""
    lines = pulled.stderr.splitlines()
    assert lines[0] == "pulling manifest"
    assert lines[-3:] == ["verifying sha256 digest", "writing manifest", "success"]
    found = bars(pulled.stderr)
    assert set(found) == {layer["digest"][7:19] for layer in want}
    for layer in want:
        m = found[layer["digest"][7:19]]
        assert m["verb"] == "pulling" and m["done"] == m["total"]
        if layer["size"] < 1000:
            assert m["unit"] == "bytes" and m["total"] == str(layer["size"])
        else:
            assert m["unit"] == "kB" and float(m["total"]) == pytest.approx(layer["size"] / 1000, abs=0.05)
    bar_rows = [i for i, line in enumerate(lines) if BAR.match(line)]
    assert bar_rows == list(range(1, 1 + len(want)))  # the bars sit between the first and the last steps
    listed = other("list")
    assert listed.returncode == 0 and f"{name}    " in listed.stdout

    # `run` of a model that is not local pulls it first (progress on stderr), then answers on stdout
    assert other("rm", name).stdout == f"deleted '{name}'\n"
    expected = "".join(g.response for g in tiny.stub.Generate(pb.GenerateRequest(model="tiny", prompt="hello")))
    ran = other("run", name, "hello", "--insecure")
    assert ran.returncode == 0 and ran.stdout == expected + "\n\n"
    assert ran.stderr.splitlines()[0] == "pulling manifest" and ran.stderr.splitlines()[-1] == "success"

    missing = other("pull", f"{registry.host}/team/nothing:v1", "--insecure")
    assert missing.returncode == 1 and missing.stdout == ""
    assert missing.stderr.splitlines()[0] == "pulling manifest"
    assert missing.stderr.splitlines()[-1].startswith("Error: ") and "file does not exist" in missing.stderr


def test_pull_on_a_terminal_draws_live_bars_with_speed_and_eta(server, registry, tmp_path, monkeypatch):
    """Through a proxy that sends 1 MB/s on one stream, a 2 MB layer takes about two seconds: on a terminal
    the bar redraws meanwhile with the bytes so far, the speed and the time left."""
    import pexpect

    from tests.cli.test_cli_interactive import plain, spawn
    from tests.registry.conftest import seed_registry
    from tests.registry.proxy import Proxy

    _, manifest, _ = seed_registry(tmp_path, registry.host, "team/big:latest", size=2_000_000)
    proxy = Proxy(registry.host, rate=1_000_000).start()
    monkeypatch.setenv("CORRAL_REGISTRY_STREAMS", "1")
    try:
        c = spawn(server.target, "pull", f"{proxy.host}/team/big:latest", "--insecure")
        c.expect(pexpect.EOF, timeout=60)
        c.close()
    finally:
        proxy.stop()
    assert c.exitstatus == 0
    screen = plain(c.before)
    hex12 = manifest.layers[0].digest[7:19]
    frames = re.findall(rf"pulling {hex12} +(\d+)% \S+ ([\d.]+)/2\.0 MB +([\d.]+ [kM]B/s) +(\d:\d\d:\d\d)", screen)
    moving = [f for f in frames if 0 < int(f[0]) < 100]
    assert moving, screen  # drawn while it moved: part done, a speed and a time left
    assert frames[-1][0] == "100" and frames[-1][1] == "2.0"
    assert screen.rstrip().endswith("success")
