"""The `corral` client commands as a user runs them: each test starts the real CLI in a subprocess
against a real gRPC server and checks what it prints (stdout and stderr) and its exit code, against the
Ollama CLI's texts (cmd/cmd.go) and against what the server itself answers over gRPC.
"""

import json
import re
import socket
import subprocess

import pytest

from corral.protos.ollama.v1 import ollama_pb2 as pb
from corral.service.cli import fmt
from corral.store.modelfile import float32_value
from tests.cli.conftest import CLI, LICENSE, ROOT, SYSTEM, cli_env, create_model

COMMANDS = ["serve", "create", "show", "run", "stop", "pull", "push", "list", "ls", "ps", "cp", "rm", "embed"]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the block ends: nothing listens there


def test_help_and_version_need_no_server():
    env = cli_env(f"127.0.0.1:{closed_port()}")
    procs = {cmd: subprocess.Popen([*CLI, cmd, "--help"], cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for cmd in COMMANDS}
    top = subprocess.run([*CLI, "--help"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    version = subprocess.run([*CLI, "--version"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    from importlib.metadata import version as dist_version

    from corral.service.version import OLLAMA_COMPAT_VERSION

    assert version.returncode == 0 and version.stderr == ""
    assert version.stdout == f"corral version {dist_version('corral')}\nOllama API version {OLLAMA_COMPAT_VERSION}\n"
    assert top.returncode == 0 and top.stderr == ""
    for cmd in COMMANDS:
        if cmd != "ls":
            assert re.search(rf"^    {cmd}\b", top.stdout, re.M), cmd
    assert "CORRAL_GRPC_TARGET" in top.stdout
    helps = {}
    for cmd, proc in procs.items():
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0 and err == "", (cmd, err)
        shown = "list" if cmd == "ls" else cmd
        assert out.startswith(f"usage: corral {shown} "), (cmd, out)
        if cmd != "serve":
            assert "--grpc-target" in out, cmd
        helps[cmd] = out
    for cmd, flags in {"pull": ["--insecure"], "push": ["--insecure"], "run": ["--keepalive", "--format", "--verbose"],
                       "show": ["--modelfile", "--parameters", "--template", "--system", "--license", "--verbose"],
                       "embed": ["--dimensions", "--truncate"], "create": ["--file", "--quantize"],
                       "serve": ["--grpc-address", "--no-http"]}.items():
        assert all(flag in helps[cmd] for flag in flags), cmd


def test_unreachable_server_is_one_clear_error():
    port = closed_port()
    env = cli_env(f"127.0.0.1:{port}")
    for args in (["list"], ["run", "tiny", "hi"], ["pull", "x"]):
        r = subprocess.run([*CLI, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
                           stdin=subprocess.DEVNULL)
        assert r.returncode == 1 and r.stdout == ""
        assert r.stderr == f"Error: could not connect to corral server at 127.0.0.1:{port}, run 'corral serve' to start it\n"


def test_target_comes_from_ollama_host(monkeypatch):
    from corral.store import config

    monkeypatch.delenv("CORRAL_GRPC_TARGET", raising=False)
    monkeypatch.delenv("OLLAMA_HOST", raising=False)
    assert config.cli_grpc_target() == "127.0.0.1:50051"
    monkeypatch.setenv("OLLAMA_HOST", "http://10.1.2.3:8080")
    assert config.cli_grpc_target() == "10.1.2.3:50051"
    monkeypatch.setenv("OLLAMA_HOST", "0.0.0.0")
    assert config.cli_grpc_target() == "127.0.0.1:50051"
    monkeypatch.setenv("OLLAMA_HOST", "[::1]:11434")
    assert config.cli_grpc_target() == "[::1]:50051"
    monkeypatch.setenv("CORRAL_GRPC_TARGET", "example:1234")
    assert config.cli_grpc_target() == "example:1234"


def test_usage_errors_exit_non_zero(cli):
    r = cli("show")
    assert r.returncode == 2 and "usage: corral show" in r.stderr and "required: model" in r.stderr
    r = cli("nonsense")
    assert r.returncode == 2 and "invalid choice: 'nonsense'" in r.stderr


def test_list_and_ps(tiny, cli):
    r = cli("cp", "tiny", "other/copy:v2")
    assert r.returncode == 0 and r.stdout == "copied 'tiny' to 'other/copy:v2'\n" and r.stderr == ""
    models = {m.name: m for m in tiny.stub.List(pb.ListRequest()).models}
    r = cli("list")
    assert r.returncode == 0 and r.stderr == ""
    lines = r.stdout.splitlines()
    assert re.fullmatch(r"NAME +ID +SIZE +MODIFIED", lines[0])
    assert lines[0].index("ID") == len("other/copy:v2") + 4
    rows = [re.split(r" {4,}", line) for line in lines[1:]]
    assert [row[0] for row in rows] == list(models)  # newest first, as the server orders them
    for name, digest, size, modified in rows:
        assert digest == models[name].digest[:12] and re.fullmatch(r"[0-9a-f]{12}", digest)
        assert size == fmt.human_bytes(models[name].size) and size.endswith(" KB")
        assert re.fullmatch(r"Less than a second ago|\d+ seconds ago|1 second ago", modified)
    r = cli("ls", "TI")  # prefix filter, case-insensitive, as `ollama list PREFIX`
    assert r.returncode == 0 and [line.split()[0] for line in r.stdout.splitlines()] == ["NAME", "tiny:latest"]

    r = cli("ps")
    assert r.returncode == 0 and r.stdout.split() == ["NAME", "ID", "SIZE", "PROCESSOR", "CONTEXT", "UNTIL"]
    req = pb.GenerateRequest(model="tiny")
    req.keep_alive.FromSeconds(-1)
    list(tiny.stub.Generate(req))
    running = tiny.stub.ListRunning(pb.ListRunningRequest()).models[0]
    r = cli("ps")
    assert r.returncode == 0
    header, row = r.stdout.splitlines()
    assert re.split(r" {4,}", row) == ["tiny:latest", running.digest[:12], fmt.human_bytes(running.size), "100% CPU",
                                       str(running.context_length), "Forever"]
    assert header.index("PROCESSOR") == row.index("100% CPU")


def test_show(tiny, cli):
    r = cli("show", "tiny")
    assert r.returncode == 0 and r.stderr == ""
    assert r.stdout == (
        "  Model\n"
        "    architecture        llama\n"
        "    parameters          162K\n"
        "    context length      256\n"
        "    embedding length    64\n"
        "    quantization        F32\n"
        "\n"
        "  Capabilities\n"
        "    completion\n"
        "\n"
        "  Parameters\n"
        "    num_predict    8\n"
        "    seed           7\n"
        "    temperature    0\n"
        "\n"
        "  System\n"
        f"    {SYSTEM}\n"
        "\n"
        "  License\n"
        "    MIT License\n"
        "    Copyright tiny\n"
        "    ...\n"
        "\n"
    )
    resp = tiny.stub.Show(pb.ShowRequest(model="tiny"))
    for flag, expected in (("--license", LICENSE + "\n"), ("--system", SYSTEM), ("--template", resp.template),
                           ("--parameters", resp.parameters + "\n"), ("--modelfile", resp.modelfile + "\n")):
        r = cli("show", "tiny", flag)
        assert r.returncode == 0 and r.stdout == expected, flag
    r = cli("show", "tiny", "--verbose")
    assert r.returncode == 0
    assert "  Metadata\n" in r.stdout and re.search(r"^    llama\.block_count +2$", r.stdout, re.M)
    assert re.search(r"^    tokenizer\.ggml\.tokens +\[<unk> \.\.\.\+\d+ more\]$", r.stdout, re.M)
    assert re.search(r"^    token_embd\.weight +F32 +\[64 \d+\]$", r.stdout, re.M)
    r = cli("show", "tiny", "--license", "--system")
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr == ("Error: only one of '--license', '--modelfile', '--parameters', '--system', or "
                        "'--template' can be specified\n")
    r = cli("show", "nope")
    assert r.returncode == 1 and r.stdout == "" and r.stderr == "Error: model 'nope' not found\n"


def test_cp_rm_and_stop(tiny, cli):
    r = cli("cp", "nope", "x")
    assert r.returncode == 1 and r.stderr == 'Error: model "nope" not found\n'
    assert cli("cp", "tiny", "spare").returncode == 0
    for name in ("tiny", "spare"):
        list(tiny.stub.Generate(pb.GenerateRequest(model=name)))  # load
    assert len(tiny.stub.ListRunning(pb.ListRunningRequest()).models) == 1  # both names share one runner

    r = cli("stop", "tiny")
    assert r.returncode == 0 and r.stdout == "" and r.stderr == ""
    assert tiny.stub.ListRunning(pb.ListRunningRequest()).models == []
    r = cli("stop", "nope")
    assert r.returncode == 1 and r.stderr == 'Error: couldn\'t find model "nope" to stop\n'

    list(tiny.stub.Generate(pb.GenerateRequest(model="spare")))
    r = cli("rm", "spare", "nope", "tiny")
    assert r.returncode == 1
    assert r.stdout == "deleted 'spare'\n" and r.stderr == "Error: model 'nope' not found\n"  # stops at the first error
    assert tiny.stub.ListRunning(pb.ListRunningRequest()).models == []  # unloaded before it was deleted
    assert [m.name for m in tiny.stub.List(pb.ListRequest()).models] == ["tiny:latest"]
    r = cli("rm", "tiny")
    assert r.returncode == 0 and r.stdout == "deleted 'tiny'\n" and r.stderr == ""
    assert tiny.stub.List(pb.ListRequest()).models == []


def test_run_one_shot(tiny, cli):
    expected = "".join(g.response for g in tiny.stub.Generate(pb.GenerateRequest(model="tiny", prompt="hello world")))
    assert expected
    r = cli("run", "tiny", "hello", "world")
    assert r.returncode == 0 and r.stdout == expected + "\n\n" and r.stderr == ""

    # text on standard input goes before the prompt words; --verbose prints Ollama's timing summary
    piped = "".join(g.response for g in tiny.stub.Generate(pb.GenerateRequest(model="tiny", prompt="the sky\n is")))
    r = cli("run", "tiny", "is", "--verbose", input="the sky\n")
    assert r.returncode == 0 and r.stdout == piped + "\n\n"
    assert re.search(r"^eval count: +8 token\(s\)$", r.stderr, re.M)
    assert re.search(r"^total duration: +[\d.]+(ms|s|µs)$", r.stderr, re.M)

    r = cli("run", "tiny", "hi", "--keepalive", "soon")
    assert r.returncode == 1 and r.stderr == 'Error: time: invalid duration "soon"\n'
    r = cli("run", "tiny", "hi", "--keepalive=-1s")  # forever
    assert r.returncode == 0
    assert tiny.stub.ListRunning(pb.ListRunningRequest()).models[0].expires_at.ToDatetime().year > 2200
    r = cli("run", "tiny", "hi", "--format", "yaml")
    assert r.returncode == 1 and r.stdout == "" and r.stderr.startswith("Error: ")


def test_embed_and_run_on_an_embedding_model(server, tmp_path, cli):
    create_model(server.stub, tmp_path, "bert", kind="bert")
    texts = ["hello world", "the sky is blue"]
    want = [[float32_value(v) for v in e.values] for batch in server.stub.Embed(pb.EmbedRequest(model="bert", input=texts))
            for e in batch.embeddings]
    assert len(want) == 2 and len(want[0]) > 4
    r = cli("embed", "bert", *texts)
    assert r.returncode == 0 and r.stderr == ""
    assert json.loads(r.stdout) == {"model": "bert", "embeddings": want}
    r = cli("embed", "bert", "hello world", "--dimensions", "4", "the sky is blue")  # flags between texts
    out = json.loads(r.stdout)
    assert r.returncode == 0 and len(out["embeddings"]) == 2 and all(len(v) == 4 for v in out["embeddings"])
    alone = [float32_value(v) for batch in server.stub.Embed(pb.EmbedRequest(model="bert", input=["hello world"]))
             for e in batch.embeddings for v in e.values]  # (a batch of one can differ in the last bits)
    r = cli("embed", "bert", input="hello world")
    assert r.returncode == 0 and json.loads(r.stdout)["embeddings"] == [alone]
    r = cli("run", "bert", "hello world")
    assert r.returncode == 0 and json.loads(r.stdout) == alone
    r = cli("run", "bert")
    assert r.returncode == 1
    assert r.stderr == 'Error: embedding models require input text. Usage: corral run bert "your text here"\n'
    r = cli("embed", "nope", "x")
    assert r.returncode == 1 and r.stderr == 'Error: model "nope" not found, try pulling it first\n'  # Ollama's text


@pytest.mark.parametrize("args", [["create", "m", "-f", "missing/Modelfile"]])
def test_create_reports_a_missing_modelfile(cli, args):
    r = cli(*args)
    assert r.returncode == 1 and r.stderr.startswith("Error: ") and "missing/Modelfile" in r.stderr


def test_run_shows_thinking_as_ollama(server, cli, tmp_path):
    """A thinking model's reasoning comes between "Thinking..." and "...done thinking."; --hidethinking
    keeps only the answer; --think=false asks the model not to think (this scripted one then writes its
    tags as plain text)."""
    from tests.e2e.test_tools_thinking import QWEN, THOUGHT, scripted

    scripted(server, tmp_path, "thinker", QWEN, THOUGHT)
    r = cli("run", "thinker", "hi")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "Thinking...\nThe user greets me.\n\n...done thinking.\n\nHello there!\n\n"
    r = cli("run", "thinker", "hi", "--hidethinking")
    assert r.returncode == 0 and r.stdout == "Hello there!\n\n"
    r = cli("run", "thinker", "hi", "--think=false")
    assert r.returncode == 0 and r.stdout == "".join(THOUGHT) + "\n\n"
    r = cli("run", "tiny-missing-think", "hi", "--think=loud")
    assert r.returncode != 0 and "invalid choice: 'loud'" in r.stderr
