"""Safetensors -> GGUF conversion and quantization speed and memory, against a plain copy of the same bytes.

Why: conversion must stream (peak memory about one tensor, never the model) and should run near disk speed.
A synthetic BF16 Llama (sizes from BENCH_CONVERT_LAYERS, default 8 layers of width 2048, ~0.9 GB) is written
with numpy, then converted to F16 in a child process whose peak RSS is read from the kernel, and quantized
to Q4_K_M with llama.cpp. Printed: seconds and MB/s (of safetensors input) for each, beside a copy+fsync of
the same file measured in the same run (page-cache bound, so only a ceiling), with targets: conversion at
least 100 MB/s on two cores (it is bound by numpy's float32 -> float16 cast, ~700 MB/s alone), and the
child's peak RSS growth under 25 % of the model size (measured: a few tens of MiB, one block of rows).
"""

import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

LAYERS = int(os.environ.get("BENCH_CONVERT_LAYERS", "8"))
E, F, V, HEADS = 2048, 5632, 32000, 16

CHILD = r"""
import resource, sys, time
from pathlib import Path
from corral.service.convert import convert
d = Path(sys.argv[1])
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter()
files = {p.name: p for p in d.iterdir() if p.is_file()}
for _ in convert(files, Path(sys.argv[2])):
    pass
print(time.perf_counter() - t, base, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def write_model(d: Path) -> int:
    """A BF16 Llama safetensors with a byte-level BPE tokenizer; returns the safetensors size."""
    rng = np.random.default_rng(0)
    shapes = {"model.embed_tokens.weight": (V, E), "model.norm.weight": (E,), "lm_head.weight": (V, E)}
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        shapes.update({p + "input_layernorm.weight": (E,), p + "post_attention_layernorm.weight": (E,),
                       p + "self_attn.q_proj.weight": (E, E), p + "self_attn.k_proj.weight": (E, E),
                       p + "self_attn.v_proj.weight": (E, E), p + "self_attn.o_proj.weight": (E, E),
                       p + "mlp.gate_proj.weight": (F, E), p + "mlp.up_proj.weight": (F, E),
                       p + "mlp.down_proj.weight": (E, F)})
    header, offset = {}, 0
    for name, shape in shapes.items():
        n = int(np.prod(shape)) * 2
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    head = json.dumps(header).encode()
    with open(d / "model.safetensors", "wb") as f:
        f.write(struct.pack("<Q", len(head)) + head)
        block = (rng.standard_normal(1 << 22, dtype=np.float32).view(np.uint32) >> 16).astype(np.uint16)
        left = offset
        while left:
            chunk = block[: min(len(block), left // 2)]
            f.write(chunk.tobytes())
            left -= chunk.nbytes
    vocab = {chr(0x100 + i) if i < 256 else f"t{i}": i for i in range(V)}
    (d / "tokenizer.json").write_text(json.dumps({
        "model": {"type": "BPE", "vocab": vocab, "merges": []}, "added_tokens": [],
        "pre_tokenizer": {"type": "ByteLevel", "use_regex": True}, "decoder": {"type": "ByteLevel"}}))
    (d / "config.json").write_text(json.dumps({
        "architectures": ["LlamaForCausalLM"], "hidden_size": E, "intermediate_size": F,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS, "num_key_value_heads": HEADS, "vocab_size": V, "rms_norm_eps": 1e-5,
        "max_position_embeddings": 4096, "rope_theta": 10000.0}))
    return (d / "model.safetensors").stat().st_size


def main() -> None:
    from corral.service.convert.quantize import quantize

    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP", "/var/tmp")) as tmp:
        d = Path(tmp) / "model"
        d.mkdir()
        size = write_model(d)
        t = time.perf_counter()
        shutil.copyfile(d / "model.safetensors", Path(tmp) / "copy")
        with open(Path(tmp) / "copy", "rb+") as f:
            os.fsync(f.fileno())
        copy_s = time.perf_counter() - t
        (Path(tmp) / "copy").unlink()
        out = Path(tmp) / "model.gguf"
        r = subprocess.run([sys.executable, "-c", CHILD, str(d), str(out)], capture_output=True, text=True,
                           cwd=Path(__file__).resolve().parents[1], check=True)
        conv_s, base_kib, peak_kib = (float(x) for x in r.stdout.split())
        t = time.perf_counter()
        for _ in quantize(out, Path(tmp) / "q4.gguf", "q4_K_M"):
            pass
        quant_s = time.perf_counter() - t
        mb = size / 1e6
        growth = (peak_kib - base_kib) / 1024
        print(f"model: {LAYERS} layers, {mb:.0f} MB BF16 safetensors")
        print(f"copy+fsync        {copy_s:6.2f} s  {mb / copy_s:7.0f} MB/s")
        print(f"convert -> F16    {conv_s:6.2f} s  {mb / conv_s:7.0f} MB/s (target >= 100)  "
              f"peak RSS growth {growth:.0f} MiB = {growth * 1.048576 / mb:.0%} of model (target < 25 %)")
        print(f"quantize Q4_K_M   {quant_s:6.2f} s  {mb / quant_s:7.0f} MB/s  -> "
              f"{(Path(tmp) / 'q4.gguf').stat().st_size / 1e6:.0f} MB")


if __name__ == "__main__":
    main()
