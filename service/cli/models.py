"""The model-management commands: list/ls, ps, show, cp, rm, stop and embed, as the Ollama CLI words them.

Each function takes the connected Client and the parsed arguments, prints to stdout (tables, JSON) and
raises (gRPC errors, CliError) for main's "Error: <message>" line; texts follow Ollama's cmd/cmd.go.
"""

from __future__ import annotations

import json
import math
import sys
import time

import grpc
from google.protobuf import duration_pb2

from corral.protos.ollama.v1 import ollama_pb2 as pb
from corral.protos.structs import struct_to_dict
from corral.service.cli import fmt
from corral.service.cli.client import Client, CliError, is_connection_error
from corral.store.gocompat import parse_go_duration
from corral.store.modelfile import float32_value

SHOW_FIELDS = ("license", "modelfile", "parameters", "system", "template")


def keep_alive(text: str | None) -> duration_pb2.Duration | None:
    """--keepalive: a Go duration ("5m", "1h30m", "-1s" = forever, "0"); None when not given."""
    if text is None or text == "":
        return None
    try:
        seconds = parse_go_duration(text)
    except ValueError as err:
        raise CliError(str(err)) from None
    d = duration_pb2.Duration()
    d.FromNanoseconds(round(seconds * 1e9))
    return d


def list_models(client: Client, args) -> int:
    models = client.stub.List(pb.ListRequest()).models
    prefix = (args.prefix or "").lower()
    rows = [
        [m.name, m.digest[:12], fmt.human_bytes(m.size), fmt.human_time(fmt.timestamp_seconds(m.modified_at), "Never")]
        for m in models
        if m.name.lower().startswith(prefix)
    ]
    sys.stdout.write(fmt.table(rows, ["NAME", "ID", "SIZE", "MODIFIED"]))
    return 0


def _processor(size: int, vram: int) -> str:
    if vram == 0:
        return "100% CPU"
    if vram == size:
        return "100% GPU"
    if vram > size or size == 0:
        return "Unknown"
    cpu = round((size - vram) / size * 100)
    return f"{cpu}%/{100 - cpu}% CPU/GPU"


def list_running(client: Client, args) -> int:
    models = client.stub.ListRunning(pb.ListRunningRequest()).models
    now = time.time()
    rows = []
    for m in models:
        if args.prefix and not m.name.startswith(args.prefix):
            continue
        expires = fmt.timestamp_seconds(m.expires_at)
        until = "Stopping..." if expires is not None and expires < now else fmt.human_time(expires, "Never", now)
        rows.append([m.name, m.digest[:12], fmt.human_bytes(m.size), _processor(m.size, m.size_vram),
                     str(m.context_length), until])
    sys.stdout.write(fmt.table(rows, ["NAME", "ID", "SIZE", "PROCESSOR", "CONTEXT", "UNTIL"]))
    return 0


# -- show ---------------------------------------------------------------------------------------------------


def _section(out: list[str], header: str, rows: list[list[str]]) -> None:
    out.append(f"  {header}\n")
    out.append(fmt.table([["", *r] for r in rows]))
    out.append("\n")


def _head(text: str, n: int) -> list[list[str]]:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    rows = [[line] for line in lines[:n]]
    if len(lines) > n:
        rows.append(["..."])
    return rows


def _short_array(values: list) -> str:
    """A long GGUF array as Ollama's show --verbose prints it: the items that fit in 10 columns, then a count."""
    width, shown = 1, 0
    for i, item in enumerate(values):
        w = len(fmt.go_value(item)) + (2 if i else 0)
        if width + w > 10 and i > 0:
            break
        width += w
        shown += 1
    if shown < len(values):
        return fmt.go_value(values[:shown])[:-1] + f" ...+{len(values) - shown} more]"
    return fmt.go_value(values)


def show_info(resp: pb.ShowResponse, verbose: bool = False) -> str:
    """The sections of `ollama show MODEL`: Model, Capabilities, Projector, Parameters, (Metadata, Tensors),
    System, License."""
    info = struct_to_dict(resp.model_info) if resp.HasField("model_info") else None
    out: list[str] = []
    rows: list[list[str]] = []
    if info:
        arch = info.get("general.architecture") or ""
        if arch:
            rows.append(["architecture", str(arch)])
        params = resp.details.parameter_size
        if not params and isinstance(info.get("general.parameter_count"), (int, float)):
            params = _human_number(info["general.parameter_count"])
        if params:
            rows.append(["parameters", params])
        for key, label in (("context_length", "context length"), ("embedding_length", "embedding length")):
            value = info.get(f"{arch}.{key}")
            if isinstance(value, (int, float)):
                rows.append([label, fmt.number(value)])
    else:
        rows += [["architecture", resp.details.family], ["parameters", resp.details.parameter_size]]
    rows.append(["quantization", resp.details.quantization_level])
    _section(out, "Model", rows)

    if resp.capabilities:
        _section(out, "Capabilities", [[c] for c in resp.capabilities])

    projector = struct_to_dict(resp.projector_info) if resp.HasField("projector_info") else None
    if projector:
        arch = projector.get("general.architecture") or ""
        rows = [["architecture", str(arch)]] if arch else []
        if isinstance(projector.get("general.parameter_count"), (int, float)):
            rows.append(["parameters", _human_number(projector["general.parameter_count"])])
        for suffix, label in (("embedding_length", "embedding length"), ("projection_dim", "dimensions")):
            for modality in ("vision", "audio"):
                value = projector.get(f"{arch}.{modality}.{suffix}")
                if isinstance(value, (int, float)):
                    rows.append([label, fmt.number(value)])
                    break
        _section(out, "Projector", rows)

    if resp.parameters:
        _section(out, "Parameters", [line.split() for line in resp.parameters.splitlines() if line.strip()])

    if info and verbose:
        meta = []
        for key in sorted(info):
            value = info[key]
            if isinstance(value, list):
                text = _short_array(value)
            elif isinstance(value, (bool, str, int, float)):
                text = fmt.go_value(float(value) if type(value) is int else value)
            else:
                text = type(value).__name__
            meta.append([key, text])
        _section(out, "Metadata", meta)

    if resp.tensors and verbose:
        _section(out, "Tensors", [[t.name, t.type, fmt.go_value(list(t.shape))] for t in resp.tensors])

    if resp.system:
        _section(out, "System", _head(resp.system, 2))
    if resp.license:
        _section(out, "License", _head(resp.license, 2))
    return "".join(out)


def _human_number(n: float) -> str:
    """format.HumanNumber: 8B, 3.2B, 137M, 22.35M, 22K."""
    n = int(n)
    for unit, size, decimals in (("B", 10**9, 1), ("M", 10**6, 2)):
        if n >= size:
            value = n / size
            return f"{value:.0f}{unit}" if value == math.floor(value) else f"{value:.{decimals}f}{unit}"
    return f"{n / 1000:.0f}K" if n >= 1000 else str(n)


def show(client: Client, args) -> int:
    chosen = [field for field in SHOW_FIELDS if getattr(args, field)]
    if len(chosen) > 1:
        raise CliError("only one of '--license', '--modelfile', '--parameters', '--system', or '--template' "
                       "can be specified")
    resp = client.stub.Show(pb.ShowRequest(model=args.model, verbose=args.verbose))
    if chosen:
        field = chosen[0]
        text = getattr(resp, field)
        # Ollama prints license, modelfile and parameters with a newline, system and template as they are.
        sys.stdout.write(text if field in ("system", "template") else text + "\n")
        return 0
    sys.stdout.write(show_info(resp, args.verbose))
    return 0


# -- cp, rm, stop -------------------------------------------------------------------------------------------


def copy(client: Client, args) -> int:
    client.stub.Copy(pb.CopyRequest(source=args.source, destination=args.destination))
    print(f"copied '{args.source}' to '{args.destination}'")
    return 0


def unload(client: Client, model: str) -> None:
    """A generate with an empty prompt and keep_alive 0: the server unloads the model if it is loaded."""
    req = pb.GenerateRequest(model=model)
    req.keep_alive.FromNanoseconds(0)
    for _ in client.stub.Generate(req):
        pass


def remove(client: Client, args) -> int:
    for model in args.models:
        try:
            unload(client, model)
        except grpc.RpcError as err:
            if is_connection_error(err):
                raise
            if "not found" not in (err.details() or "").lower():
                print(f"Warning: unable to stop model '{model}'", file=sys.stderr)
        client.stub.Delete(pb.DeleteRequest(model=model))
        print(f"deleted '{model}'")
    return 0


def stop(client: Client, args) -> int:
    try:
        unload(client, args.model)
    except grpc.RpcError as err:
        if "not found" in (err.details() or ""):
            raise CliError(f'couldn\'t find model "{args.model}" to stop') from None
        raise
    return 0


# -- embed --------------------------------------------------------------------------------------------------


def embed_texts(client: Client, model: str, texts: list[str], dimensions: int = 0, truncate: bool | None = None,
                keep: duration_pb2.Duration | None = None) -> list[list[float]]:
    req = pb.EmbedRequest(model=model, input=texts, dimensions=dimensions)
    if truncate is not None:
        req.truncate = truncate
    if keep is not None:
        req.keep_alive.CopyFrom(keep)
    vectors: list[list[float]] = []
    for batch in client.stub.Embed(req):
        # float32 values, written with the shortest text that reads back as the same float32
        vectors.extend([float32_value(v) for v in e.values] for e in batch.embeddings)
    return vectors


def embed(client: Client, args) -> int:
    texts = list(args.text)
    if not texts:
        if sys.stdin.isatty():
            raise CliError("embed needs text: corral embed MODEL TEXT... (or text on standard input)")
        texts = [sys.stdin.read()]
    vectors = embed_texts(client, args.model, texts, args.dimensions, args.truncate, keep_alive(args.keepalive))
    json.dump({"model": args.model, "embeddings": vectors}, sys.stdout, separators=(",", ":"))
    sys.stdout.write("\n")
    return 0
