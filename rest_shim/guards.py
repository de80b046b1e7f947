"""CORS and the Host-header guard, as Ollama applies them before routing (spec §11).

Browsers on other sites must not drive a local model server: requests from an origin that is not allowed
get 403 with an empty body, and while we listen on loopback, a Host header that is not a local name
(DNS rebinding) gets 403 too. OLLAMA_ORIGINS adds origins; a '*' entry allows every origin.
"""

import fnmatch
import ipaddress
import socket

from flask import Response, request

from corral.store import config

DEFAULT_ORIGINS = [
    f"{scheme}://{host}{port}"
    for scheme in ("http", "https")
    for host in ("localhost", "127.0.0.1", "0.0.0.0")
    for port in ("", ":*")
] + ["app://*", "file://*", "tauri://*", "vscode-webview://*", "vscode-file://*"]

ALLOW_METHODS = "GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS"
ALLOW_HEADERS = "Authorization, Content-Type, User-Agent, Accept, X-Requested-With, OpenAI-Beta, x-stainless-*"
MAX_AGE = str(12 * 3600)


def allowed_origins() -> list[str]:
    return config.origins() + DEFAULT_ORIGINS


def origin_allowed(origin: str, patterns: list[str]) -> bool:
    return any(p == "*" or fnmatch.fnmatchcase(origin, p) for p in patterns)


def host_allowed(host_header: str) -> bool:
    """Local names and local/private addresses only (the DNS-rebinding defence)."""
    host = host_header.rsplit(":", 1)[0] if host_header.count(":") == 1 else host_header
    host = host.strip("[]").lower()
    if host in ("", "localhost") or host.endswith((".localhost", ".local", ".internal")):
        return True
    if host == socket.gethostname().lower():
        return True
    try:
        ip = ipaddress.ip_address(host.split("]")[0].split("%")[0] if host.startswith("[") else host)
    except ValueError:
        return False
    return ip.is_loopback or ip.is_private or ip.is_unspecified or ip.is_link_local


def install(app, loopback: bool):
    patterns = allowed_origins()
    wildcard = "*" in patterns

    @app.before_request
    def _guard():
        if loopback and not host_allowed(request.host or ""):
            return Response(status=403)
        origin = request.headers.get("Origin")
        if not origin or origin in (f"http://{request.host}", f"https://{request.host}"):
            return None
        if not origin_allowed(origin, patterns):
            return Response(status=403)
        if request.method == "OPTIONS":
            return Response(status=204, headers={
                "Access-Control-Allow-Origin": "*" if wildcard else origin,
                "Access-Control-Allow-Methods": ALLOW_METHODS,
                "Access-Control-Allow-Headers": ALLOW_HEADERS,
                "Access-Control-Max-Age": MAX_AGE,
                "Vary": "Origin",
            })
        return None

    @app.after_request
    def _cors(response):
        origin = request.headers.get("Origin")
        if origin and origin_allowed(origin, patterns):
            response.headers["Access-Control-Allow-Origin"] = "*" if wildcard else origin
            response.headers.add("Vary", "Origin")
        return response
