"""Content digests: `sha256:<hex>` as the API and manifests write them, `sha256-<hex>` as blob file names.

Why: the API, manifests and the registry all say `sha256:<hex>`, while blob files use a dash because ':'
is not allowed in Windows file names. Ollama accepts either separator and any hex case in requests
(`^sha256[:-][0-9a-fA-F]{64}$`) but keeps the hex as given: the digests it computes are lowercase, so an
uppercase digest simply never matches a stored blob. We do the same.
"""

from __future__ import annotations

import hashlib
import re

from corral.store.errors import InvalidArgument

INVALID_DIGEST = "invalid digest format"

_DIGEST_RE = re.compile(r"sha256[:-]([0-9a-fA-F]{64})")
_BLOB_FILE_RE = re.compile(r"sha256-([0-9a-fA-F]{64})")


def parse_digest(text: str) -> str:
    """Normalises `sha256:<hex>` or `sha256-<hex>` to `sha256:<hex>`; else InvalidArgument."""
    match = _DIGEST_RE.fullmatch(text or "")
    if match is None:
        raise InvalidArgument(INVALID_DIGEST)
    return f"sha256:{match.group(1)}"


def is_digest(text: str) -> bool:
    return _DIGEST_RE.fullmatch(text or "") is not None


def digest_hex(digest: str) -> str:
    """The hex part of a digest in either form."""
    return parse_digest(digest)[len("sha256:"):]


def digest_filename(digest: str) -> str:
    """The blob file name for a digest: `sha256-<hex>`."""
    return f"sha256-{digest_hex(digest)}"


def digest_from_filename(filename: str) -> str | None:
    """The digest a blob file name stands for, or None if the name is not exactly `sha256-<64 hex>`."""
    match = _BLOB_FILE_RE.fullmatch(filename)
    return f"sha256:{match.group(1)}" if match else None


def sha256_digest(data: bytes) -> str:
    """`sha256:<lowercase hex>` of some bytes."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def find_digests(data: bytes) -> set[str]:
    """Every digest-looking string in some bytes, normalised; used to keep the blobs of a manifest we
    cannot parse, so that pruning never deletes what it might reference."""
    text = data.decode("utf-8", errors="replace")
    return {f"sha256:{m.group(1)}" for m in _DIGEST_RE.finditer(text)}


def file_digest(path) -> str:
    """`sha256:<hex>` of a file's content, read in 1 MiB blocks into one reused buffer."""
    hasher = hashlib.sha256()
    buf = bytearray(1 << 20)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            hasher.update(view[:n])
    return "sha256:" + hasher.hexdigest()
