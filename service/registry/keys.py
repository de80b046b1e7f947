"""The server's ed25519 identity key, used only to sign registry token requests (spec §3, §6).

Why: registry.ollama.ai (and registries that copy its scheme) identify a server by an ed25519 key rather
than a password. Ollama keeps it in ~/.ollama/id_ed25519 (OpenSSH private key format, no passphrase) with
the public half in id_ed25519.pub (`ssh-ed25519 AAAA...`), creating both on first use. We read and write
the same files, so a machine that already runs Ollama keeps its registered identity.

The signature format is Ollama's `auth.Sign`: `<base64 SSH public key blob>:<base64 raw signature>`,
where the blob is the middle field of the authorized_keys line.
"""

from __future__ import annotations

import base64
import os
import threading
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

KEY_NAME = "id_ed25519"
_lock = threading.Lock()


def key_dir() -> Path:
    """~/.ollama, read at call time so that tests (and `HOME=...`) can move it."""
    return Path.home() / ".ollama"


def _write_private(path: Path, data: bytes) -> None:
    """Writes the private key 0600 via a temp file and rename, so no reader ever sees half a key."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def load_or_create(directory: Path | None = None) -> Ed25519PrivateKey:
    """The private key in <directory>/id_ed25519, generated (with its .pub) when missing."""
    directory = directory or key_dir()
    path = directory / KEY_NAME
    with _lock:
        if path.exists():
            key = serialization.load_ssh_private_key(path.read_bytes(), password=None)
            if not isinstance(key, Ed25519PrivateKey):
                raise ValueError(f"{path}: not an ed25519 key")
            return key
        directory.mkdir(mode=0o755, parents=True, exist_ok=True)
        key = Ed25519PrivateKey.generate()
        private = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
        )
        _write_private(path, private)
        pub_path = directory / (KEY_NAME + ".pub")
        pub_path.write_bytes(public_key_line(key) + b"\n")
        os.chmod(pub_path, 0o644)
        return key


def public_key_line(key: Ed25519PrivateKey) -> bytes:
    """`ssh-ed25519 AAAA...` as in an authorized_keys file."""
    return key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)


def public_key_blob(key: Ed25519PrivateKey) -> str:
    """The base64 SSH wire-format public key (the `AAAA...` field), as Ollama puts before the ':'."""
    return public_key_line(key).split()[1].decode()


def sign(data: bytes, key: Ed25519PrivateKey | None = None) -> str:
    """Ollama's Authorization value for a token request: `<public key blob>:<base64 signature>`."""
    key = key or load_or_create()
    signature = base64.b64encode(key.sign(data)).decode()
    return f"{public_key_blob(key)}:{signature}"
