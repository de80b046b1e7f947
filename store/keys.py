"""API keys: the one check of a presented bearer key, for the gRPC interceptor (service/auth.py) and the
REST shim (rest_shim/auth.py) alike; a pure module the shim may import, as it does store/config.py.

Keys are compared with hmac.compare_digest against every configured key (no early exit), so the time
taken says nothing about how close a guess was or which key matched.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable

UNAUTHORIZED = "unauthorized"


class Keys:
    """The accepted keys; `accepts(header)` checks an `authorization` value ("Bearer <key>")."""

    def __init__(self, keys: Iterable[str]):
        self._keys = [k.encode() for k in keys]
        if not self._keys:
            raise ValueError("authentication needs at least one key")

    def accepts(self, header: str | None) -> bool:
        if not header:
            return False
        scheme, _, presented = header.partition(" ")
        if scheme.lower() != "bearer":
            return False
        candidate = presented.strip().encode()
        ok = False
        for key in self._keys:
            ok |= hmac.compare_digest(key, candidate)
        return ok
