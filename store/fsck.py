"""A store consistency check: every manifest parses, every blob it names exists, has the size it states
and hashes to its digest, and no temp file is left behind.

Why one place: the fault tests (a server killed at random points, a full disk, two servers on one
store) all end by asking the same question, and an operator may ask it too:
`python -m corral.store.fsck [ROOT]` prints the report and exits 1 when the store is not consistent.
Resumable downloads (`-partial` files) and blobs no manifest references are listed but are not faults:
the next pull resumes the former, the start-up prune removes the latter after its grace period.
Everything is hashed (no verification stamps are trusted): this is the slow, complete check.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from corral.store.config import models_root
from corral.store.digests import digest_from_filename, file_digest, find_digests
from corral.store.manifests import Manifest, ManifestStore
from corral.store.paths import StorePaths

_DOWNLOAD = re.compile(r"sha256-[0-9a-fA-F]{64}-partial(?:-\d+)?")


@dataclass
class Report:
    manifests: list[str] = field(default_factory=list)  # model names that are whole
    problems: list[str] = field(default_factory=list)  # what makes a model unusable
    strays: list[str] = field(default_factory=list)  # temp or unknown files, relative to the root
    downloads: list[str] = field(default_factory=list)  # resumable download state
    unreferenced: list[str] = field(default_factory=list)  # blobs no manifest names

    @property
    def ok(self) -> bool:
        return not self.problems and not self.strays

    def text(self) -> str:
        lines = [f"{len(self.manifests)} models whole, {len(self.problems)} problems, {len(self.strays)} stray "
                 f"files, {len(self.downloads)} download files, {len(self.unreferenced)} unreferenced blobs"]
        lines += [f"problem: {p}" for p in self.problems]
        lines += [f"stray: {s}" for s in self.strays]
        return "\n".join(lines)


def check(root: str | os.PathLike, hash_blobs: bool = True) -> Report:
    """Checks the store at `root` (read-only)."""
    paths = StorePaths(root)
    report = Report()
    hashed: dict[str, str | None] = {}  # digest -> problem (None when fine)

    def blob_problem(digest: str, size: int) -> str | None:
        if digest not in hashed:
            path = paths.blob(digest)
            try:
                actual_size = path.stat().st_size
            except FileNotFoundError:
                hashed[digest] = f"blob {digest} is missing"
                return hashed[digest]
            actual = file_digest(path) if hash_blobs else digest
            hashed[digest] = None if actual == digest else f"blob {digest} hashes to {actual}"
            if hashed[digest] is None and size and actual_size != size:
                return f"blob {digest} has {actual_size} bytes"
        return hashed[digest]

    referenced: set[str] = set()
    for name, entry in ManifestStore(paths).entries():
        raw = Path(entry.path).read_bytes()
        try:
            manifest = Manifest.from_bytes(raw)
        except ValueError as err:
            report.problems.append(f"{name.display}: manifest does not parse: {err}")
            referenced |= find_digests(raw)
            continue
        faults = []
        for layer in [*manifest.layers, manifest.config]:
            if digest_from_filename(layer.digest.replace(":", "-", 1)) is None:
                faults.append(f"{name.display}: invalid digest {layer.digest!r}")
                continue
            referenced.add(layer.digest)
            fault = blob_problem(layer.digest, layer.size)
            if fault is not None:
                faults.append(f"{name.display}: {fault}")
        report.problems += faults
        if not faults:
            report.manifests.append(name.display)

    for entry in sorted(_scan(paths.blobs_dir), key=lambda e: e.name):
        digest = digest_from_filename(entry.name)
        if digest is not None:
            if digest not in referenced:
                report.unreferenced.append(digest)
        elif _DOWNLOAD.fullmatch(entry.name):
            report.downloads.append(f"blobs/{entry.name}")
        else:
            report.strays.append(f"blobs/{entry.name}")
    for dirpath, _dirs, files in os.walk(paths.manifests_dir):
        for filename in files:
            if filename.startswith(".tmp-"):
                report.strays.append(os.path.relpath(os.path.join(dirpath, filename), paths.root))
    return report


def _scan(directory: Path) -> list[os.DirEntry]:
    try:
        with os.scandir(directory) as it:
            return list(it)
    except FileNotFoundError:
        return []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m corral.store.fsck",
        description="Checks a model store: manifests parse, blobs exist and hash right, no temp files are left.")
    parser.add_argument("root", nargs="?", help="the store (default: OLLAMA_MODELS, else ~/.ollama/models)")
    parser.add_argument("--no-hash", action="store_true", help="check that blobs exist, without hashing them")
    args = parser.parse_args(argv)
    report = check(args.root or models_root(), hash_blobs=not args.no_hash)
    print(report.text())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
