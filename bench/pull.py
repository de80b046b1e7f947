"""Registry transfer throughput: POST /api/pull and /api/push against curl on the same local registry.

A 1 GiB model (BENCH_BLOB_MIB) is served by Debian's docker-registry on loopback. Pull: (a) curl GETs the
blob into a file, (b) `corral serve` pulls the model into an empty store through POST /api/pull (parallel
ranges, hashing, fsync, rename). Push: (a) curl PUTs the blob in one monolithic upload, (b) POST /api/push
of the same model to a new repository. Each pair runs BENCH_ROUNDS times (default 3), interleaved, after a
`sync` so that one run's writeback does not land on the next; the figures are medians.

Prints the ratio b/a of throughputs (target >= 0.8) and the server's peak RSS growth during each
transfer (target < 64 MiB: a transfer must stream, never hold the blob in memory). A pull also verifies
and fsyncs what curl leaves unverified in the page cache, so a second pull ratio compares with curl
followed by fsync and sha256 of its file.
"""

import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.harness import corral_server, rss_kib  # noqa: E402
from tests.registry.conftest import CONFIG_MEDIA, MODEL_MEDIA, Registry  # noqa: E402

SIZE = int(os.environ.get("BENCH_BLOB_MIB", "1024")) * 1024 * 1024
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
CHUNK = 1 << 20


def make_model(store: Path, registry_host: str) -> tuple[str, Path]:
    """Writes a SIZE-byte model (blob, config, manifest) into a store without holding it in memory."""
    from corral.store.blobs import BlobStore
    from corral.store.manifests import Layer, Manifest, ManifestStore
    from corral.store.names import parse_name
    from corral.store.paths import StorePaths

    paths = StorePaths(store)
    paths.ensure_dirs()
    blobs = BlobStore(paths)
    block = os.urandom(CHUNK)
    digest, _ = blobs.write(block[:-8] + i.to_bytes(8, "little") for i in range(SIZE // CHUNK))
    config = b'{"model_format":"gguf","model_family":"llama","architecture":"amd64","os":"linux"}\n'
    manifest = Manifest(Layer(CONFIG_MEDIA, blobs.write_bytes(config), len(config)),
                        [Layer(MODEL_MEDIA, digest, SIZE)])
    name = parse_name(f"{registry_host}/bench/source:latest")
    ManifestStore(paths).write(name, manifest)
    return digest, blobs.path(digest)


def reset_peak(pid: int) -> int:
    """Resets VmHWM (writing 5 to clear_refs) and returns the current RSS in KiB."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        pass
    return rss_kib(pid)


def timed_stream(url: str, body: dict) -> float:
    start = time.perf_counter()
    reply = requests.post(url, json=body, stream=True, timeout=3600)
    last = {}
    for line in reply.iter_lines():
        if line:
            last = json.loads(line)
    elapsed = time.perf_counter() - start
    if last != {"status": "success"}:
        raise SystemExit(f"{url}: {last}")
    return elapsed


def fsync_and_hash(path: Path) -> float:
    """What curl leaves undone and a pull must do: make the file durable and check its sha256."""
    start = time.perf_counter()
    with open(path, "rb") as f:
        os.fsync(f.fileno())
        hasher = hashlib.sha256()
        while chunk := f.read(CHUNK):
            hasher.update(chunk)
    return time.perf_counter() - start


def curl(*args) -> float:
    start = time.perf_counter()
    subprocess.run(["curl", "-sSf", *args], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def curl_push(registry: str, repo: str, digest: str, blob: Path) -> float:
    start = time.perf_counter()
    reply = requests.post(f"http://{registry}/v2/{repo}/blobs/uploads/", timeout=30)
    location = reply.headers["Location"]
    location = location if location.startswith("http") else f"http://{registry}{location}"
    sep = "&" if "?" in location else "?"
    curl("-X", "PUT", "-H", "Content-Type: application/octet-stream", "-T", str(blob),
         f"{location}{sep}digest={digest}")
    return time.perf_counter() - start


def main():
    if not shutil.which("docker-registry") or not shutil.which("curl"):
        raise SystemExit("needs docker-registry and curl (make system-deps)")
    rows = {"pull": [], "push": [], "pull+": []}
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP", "/var/tmp")) as tmp:
        tmp = Path(tmp)
        registry = Registry(tmp / "registry").start()
        try:
            source = tmp / "source"
            digest, blob = make_model(source, registry.host)
            # the pull source: the model pushed once by curl-equivalent means (our push, not timed)
            with corral_server(source) as a, corral_server(tmp / "target") as b:
                timed_stream(f"{a.url}/api/push", {"model": f"{registry.host}/bench/source", "insecure": True})
                for i in range(ROUNDS):
                    os.sync()
                    base = curl_push(registry.host, f"bench/curl-{i}", digest, blob)
                    # a copy of the manifest under a new name, so every push uploads the blob again
                    copy = {"source": f"{registry.host}/bench/source",
                            "destination": f"{registry.host}/bench/corral-{i}"}
                    requests.post(f"{a.url}/api/copy", timeout=30, json=copy).raise_for_status()
                    os.sync()
                    rss = reset_peak(a.proc.pid)
                    ours = timed_stream(f"{a.url}/api/push", {"model": f"{registry.host}/bench/corral-{i}",
                                                              "insecure": True})
                    rows["push"].append((base, ours, (rss_kib(a.proc.pid, "VmHWM") - rss) / 1024))

                    out = tmp / "curl.bin"
                    os.sync()
                    base = curl("-o", str(out), f"{registry.url}/v2/bench/source/blobs/{digest}")
                    verified = base + fsync_and_hash(out)
                    out.unlink()
                    os.sync()
                    rss = reset_peak(b.proc.pid)
                    ours = timed_stream(f"{b.url}/api/pull", {"model": f"{registry.host}/bench/source",
                                                              "insecure": True})
                    rows["pull"].append((base, ours, (rss_kib(b.proc.pid, "VmHWM") - rss) / 1024))
                    rows["pull+"].append((verified, ours, 0.0))
                    requests.delete(f"{b.url}/api/delete", timeout=30,
                                    json={"model": f"{registry.host}/bench/source"}).raise_for_status()
        finally:
            registry.stop()
    mib = SIZE / (1 << 20)
    for kind, results in rows.items():
        if kind == "pull+":
            base = statistics.median(r[0] for r in results)
            ours = statistics.median(r[1] for r in results)
            print(f"pull vs curl + fsync + sha256 of its file (the same guarantees, done one after the other): "
                  f"ratio {base / ours:.2f}")
            continue
        base = statistics.median(r[0] for r in results)
        ours = statistics.median(r[1] for r in results)
        peak = max(r[2] for r in results)
        print(f"{kind}: curl {mib / base:7.0f} MiB/s   corral {mib / ours:7.0f} MiB/s   "
              f"ratio {base / ours:.2f} (target >= 0.8)   peak RSS growth {peak:.1f} MiB (target < 64)")
        for i, (b_, o_, p_) in enumerate(results):
            print(f"   round {i}: curl {b_:.2f}s  corral {o_:.2f}s  ratio {b_ / o_:.2f}  rss +{p_:.1f} MiB")


if __name__ == "__main__":
    main()
