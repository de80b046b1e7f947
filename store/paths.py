"""Where everything lives on disk. The ONLY module that builds paths inside the store.

Why: with every path built in one place, the layout can be read here and nowhere else can drift from
Ollama's, so an existing Ollama models folder can be served as it is (spec §3). The tree:

    <root>/                                  $OLLAMA_MODELS, else ~/.ollama/models
      blobs/
        sha256-<64 hex>                      a content-addressed blob (layer or config); the name is its digest
        sha256-<64 hex>-partial              a registry download in progress (pre-sized, sparse)
        sha256-<64 hex>-partial-<N>          the JSON state of part N of that download
        sha256-<12 random digits>-tmp        a temp file: an upload or create being hashed, renamed when verified
                                             (Ollama's own temp files are sha256-<random digits>)
      manifests/
        <host>/<namespace>/<model>/<tag>     one manifest JSON per tag, e.g. registry.ollama.ai/library/llama3.2/latest
        <host>/<namespace>/<model>/.tmp-<tag>-<random>
                                             a manifest being written (a leading '.' is never a valid tag)

Only files exactly four levels below manifests/ are manifests. Corral's temp files have names of their own
(is_temp_blob, is_temp_manifest), so the start-up sweep can tell them from files it did not write.
Directories are created 0755 and files 0644 (directories less the process umask, as Go's os.MkdirAll;
files chmod-ed to 0644 as Ollama does).
"""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path

from corral.store.digests import digest_filename
from corral.store.errors import InvalidArgument
from corral.store.names import Name

DIR_MODE = 0o755
FILE_MODE = 0o644
TEMP_BLOB_PREFIX = "sha256-"
TEMP_BLOB_SUFFIX = "-tmp"
PARTIAL_SUFFIX = "-partial"
_TEMP_BLOB = re.compile(r"sha256-\d{12}-tmp")
_TEMP_MANIFEST = re.compile(r"\.tmp-.*-\d{12}")


def is_temp_blob(filename: str) -> bool:
    """A temp file of ours in blobs/ (see temp_blob)."""
    return _TEMP_BLOB.fullmatch(filename) is not None


def is_temp_manifest(filename: str) -> bool:
    """A temp file of ours beside a manifest (see temp_manifest)."""
    return _TEMP_MANIFEST.fullmatch(filename) is not None


def _random_suffix() -> str:
    # Decimal digits like Go's os.CreateTemp; 64 hex digits would look like a finished blob.
    return str(secrets.randbelow(10**12)).zfill(12)


class StorePaths:
    """Builds every path of one store. Pure: nothing here touches the disk except ensure_dirs()."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.blobs_dir = self.root / "blobs"
        self.manifests_dir = self.root / "manifests"

    def ensure_dirs(self) -> None:
        """Creates blobs/ and manifests/ (0755)."""
        for d in (self.blobs_dir, self.manifests_dir):
            d.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)

    # -- blobs -----------------------------------------------------------------------------------

    def blob(self, digest: str) -> Path:
        """blobs/sha256-<hex>; raises InvalidArgument('invalid digest format') for a bad digest."""
        return self.blobs_dir / digest_filename(digest)

    def partial(self, digest: str) -> Path:
        """blobs/sha256-<hex>-partial: a download in progress."""
        return self.blobs_dir / (digest_filename(digest) + PARTIAL_SUFFIX)

    def partial_part(self, digest: str, n: int) -> Path:
        """blobs/sha256-<hex>-partial-<n>: the state of part n of a download."""
        return self.blobs_dir / f"{digest_filename(digest)}{PARTIAL_SUFFIX}-{int(n)}"

    def temp_blob(self) -> Path:
        """A fresh temp file name in blobs/ (sha256-<12 random digits>-tmp); create it with O_EXCL."""
        return self.blobs_dir / f"{TEMP_BLOB_PREFIX}{_random_suffix()}{TEMP_BLOB_SUFFIX}"

    # -- manifests -------------------------------------------------------------------------------

    def manifest(self, name: Name) -> Path:
        """manifests/<host>/<namespace>/<model>/<tag>. Valid names cannot contain '/' or start with '.',
        so a valid name cannot escape the store."""
        if not name.is_valid():
            raise InvalidArgument("invalid model name")
        return self.manifests_dir.joinpath(*name.parts)

    def temp_manifest(self, name: Name) -> Path:
        """A temp file beside the manifest; its leading '.' keeps it out of every manifest listing."""
        return self.manifest(name).with_name(f".tmp-{name.tag}-{_random_suffix()}")
