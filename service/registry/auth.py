"""Answers a registry's 401 challenge: Basic, Bearer tokens (docker style), and Ollama's signed tokens.

Why a module of its own: registries disagree on auth. Docker's `registry` with htpasswd wants Basic;
with token auth it points at a realm that issues JWTs for a scope (`repository:ns/m:pull,push`), given
Basic credentials or anonymously; registry.ollama.ai's realm wants a request signed with the server's
ed25519 key (spec §6). The client sends a request, and on 401 asks `Authenticator.authorize` for the
header to retry with. Tokens are cached per (realm, service, scope) until shortly before they expire, so
sixteen parallel range requests cost one token fetch.

Credentials: OLLAMA_REGISTRY_USERNAME / OLLAMA_REGISTRY_PASSWORD, else the `auths` entry for the host in
$DOCKER_CONFIG/config.json or ~/.docker/config.json (`auth` = base64 "user:pass", or username/password).
Credentials and tokens are never logged and never appear in error texts.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
import secrets
import threading
import time
from urllib.parse import urlencode, urlsplit

from corral.service.registry import keys
from corral.store import config
from corral.store.errors import Unauthenticated, Unavailable

log = logging.getLogger("corral.registry")

ACCESS_DENIED = "unauthorized: access denied"
_PARAM = re.compile(r'([A-Za-z][A-Za-z0-9_-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))')
# hex(sha256("")) base64-encoded: the body hash in Ollama's signed token request (a GET has no body).
_EMPTY_BODY = base64.b64encode(hashlib.sha256(b"").hexdigest().encode()).decode()


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """`Bearer realm="…",service="…",scope="…"` -> ("bearer", {realm, service, scope})."""
    scheme, _, rest = header.strip().partition(" ")
    params = {m.group(1).lower(): (m.group(2) if m.group(2) is not None else m.group(3)) for m in
              _PARAM.finditer(rest)}
    return scheme.lower(), {k: v.replace('\\"', '"') for k, v in params.items()}


def _auth_key(text: str) -> str:
    """`https://host:5000/v2/` -> `host:5000`, the way docker normalises `auths` keys."""
    if "://" in text:
        text = text.split("://", 1)[1]
    return text.split("/", 1)[0].lower()


def basic_credentials(host: str) -> tuple[str, str] | None:
    """(username, password) for a registry host, from the environment or a docker config.json."""
    configured = config.registry_credentials()
    if configured:
        return configured
    path = config.docker_config_path()
    try:
        auths = json.loads(path.read_text()).get("auths") or {}
    except FileNotFoundError:
        return None
    except (OSError, ValueError, AttributeError):
        log.warning("ignoring unreadable docker config %s", path)
        return None
    for key, entry in auths.items():
        if _auth_key(key) != host.lower() or not isinstance(entry, dict):
            continue
        if entry.get("auth"):
            try:
                user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                log.warning("ignoring malformed auth entry for %s in %s", host, path)
                continue
            return user, password
        if entry.get("username"):
            return entry["username"], entry.get("password", "")
    return None


def basic_header(creds: tuple[str, str]) -> str:
    return "Basic " + base64.b64encode(f"{creds[0]}:{creds[1]}".encode()).decode()


def _no_credentials(host: str) -> Unauthenticated:
    return Unauthenticated(
        f"unauthorized: authentication required by {host}: set OLLAMA_REGISTRY_USERNAME and "
        f"OLLAMA_REGISTRY_PASSWORD, or log in with docker"
    )


class Authenticator:
    """Turns 401 challenges into Authorization headers, caching Bearer tokens per scope."""

    def __init__(self, session, timeout: float = 30.0):
        self.session = session
        self.timeout = timeout
        self._tokens: dict[tuple[str, str, str], tuple[str, float]] = {}
        self._lock = threading.Lock()

    def authorize(self, host: str, challenge: str, failed: str | None) -> str:
        """The header to retry with after a 401 carrying `challenge` from `host`.

        `failed` is the Authorization value the 401 answered (None for an anonymous request): a header
        that has just failed is not offered again, so a request is retried at most once per new header.
        """
        scheme, params = parse_challenge(challenge)
        if scheme == "basic":
            creds = basic_credentials(host)
            if creds is None:
                raise _no_credentials(host)
            header = basic_header(creds)
            if header == failed:
                raise Unauthenticated(ACCESS_DENIED)
            return header
        if scheme != "bearer" or not params.get("realm"):
            raise Unauthenticated(f"unauthorized: unsupported authentication challenge from {host}")
        key = (params["realm"], params.get("service", ""), params.get("scope", ""))
        with self._lock:
            cached = self._tokens.get(key)
        if cached and cached[1] > time.monotonic() and f"Bearer {cached[0]}" != failed:
            return f"Bearer {cached[0]}"
        token, lifetime = self._fetch_token(host, *key)
        header = f"Bearer {token}"
        if header == failed:
            raise Unauthenticated(ACCESS_DENIED)
        with self._lock:
            # Renew a little early so that a token does not expire between check and use.
            self._tokens[key] = (token, time.monotonic() + max(lifetime - 10, 1))
        return header

    def _fetch_token(self, host: str, realm: str, service: str, scope: str) -> tuple[str, float]:
        query = []
        if service:
            query.append(("service", service))
        query.extend(("scope", s) for s in scope.split(" ") if s)
        creds = basic_credentials(host)
        headers = {}
        if creds is not None:
            headers["Authorization"] = basic_header(creds)  # docker-style token auth
        elif urlsplit(realm).hostname == urlsplit(f"//{host}").hostname:
            # Ollama's scheme: sign "GET,<url>,<body hash>" with our key. Only towards the registry's own
            # host, so that a hostile challenge cannot collect signatures for another registry.
            query.append(("ts", str(int(time.time()))))
            query.append(("nonce", base64.urlsafe_b64encode(secrets.token_bytes(16)).decode()))
        query.sort(key=lambda kv: kv[0])  # Go's url.Values.Encode order, which Ollama's realm re-derives
        url = realm + ("&" if "?" in realm else "?") + urlencode(query) if query else realm
        if creds is None and "nonce=" in url:
            headers["Authorization"] = keys.sign(f"GET,{url},{_EMPTY_BODY}".encode())
        try:
            reply = self.session.get(url, headers=headers, timeout=self.timeout, allow_redirects=False)
        except Exception as exc:
            raise Unavailable(f"get token from {realm}: {exc.__class__.__name__}: {exc}") from None
        if reply.status_code in (401, 403):
            raise Unauthenticated(ACCESS_DENIED)
        if reply.status_code >= 400:
            raise Unauthenticated(f"unauthorized: token server {realm} answered {reply.status_code}: "
                                  f"{reply.text.strip()[:200]}")
        try:
            data = reply.json()
            token = data.get("token") or data.get("access_token")
            lifetime = float(data.get("expires_in") or 60)
        except (ValueError, AttributeError, TypeError):
            token = None
        if not token:
            raise Unauthenticated(f"unauthorized: token server {realm} sent no token")
        return token, lifetime
