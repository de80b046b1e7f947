"""A Docker-style token server for the tests: issues RS256 JWTs that `docker-registry` (token auth) accepts.

Why written here: token auth is how most private registries work, and registry.ollama.ai's variant
signs the token request with the server's ed25519 key (spec §6). This server checks both the way the
spec describes: Basic credentials, or `Authorization: <ssh public key blob>:<base64 signature>` over
`GET,<request URL>,<base64(hex(sha256("")))>` with a fresh `ts`. It records every request, so tests can
check that tokens are cached and that no credentials are sent where they should not be.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

EMPTY_BODY = base64.b64encode(hashlib.sha256(b"").hexdigest().encode()).decode()


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def make_cert(folder: Path):
    """A self-signed RSA certificate (the registry's rootcertbundle) and its key."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "corral test token issuer")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    path = folder / "token-cert.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path, key


class TokenServer:
    service = "corral-test-registry"
    issuer = "corral-test-issuer"

    def __init__(self, key, cert_path: Path, users: dict[str, str]):
        self.key, self.users = key, users
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        self.x5c = base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()
        self.allowed_keys: set[str] | None = None  # public key blobs allowed to sign; None: any
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def start(self) -> "TokenServer":
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()

    def jwt(self, subject: str, scopes: list[str]) -> str:
        access = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            access.append({"type": kind, "name": name, "actions": [a for a in actions.split(",") if a]})
        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256", "x5c": [self.x5c]}
        claims = {"iss": self.issuer, "sub": subject, "aud": self.service, "exp": now + 300, "nbf": now - 10,
                  "iat": now, "jti": secrets.token_hex(8), "access": access}
        signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
        signature = self.key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{b64url(signature)}"

    def check_signature(self, header: str, url: str, query: dict) -> str | None:
        """The key blob when `header` is a valid Ollama signature of this request, else None."""
        blob, _, signature = header.partition(":")
        try:
            public = serialization.load_ssh_public_key(f"ssh-ed25519 {blob}".encode())
            public.verify(base64.b64decode(signature), f"GET,{url},{EMPTY_BODY}".encode())
            fresh = abs(time.time() - int(query["ts"][0])) < 300 and query.get("nonce")
        except (ValueError, KeyError, InvalidSignature, TypeError):
            return None
        if not fresh or (self.allowed_keys is not None and blob not in self.allowed_keys):
            return None
        return blob

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                parts = urlsplit(self.path)
                query = parse_qs(parts.query)
                auth = self.headers.get("Authorization", "")
                url = f"http://{self.headers['Host']}{self.path}"
                subject = None
                if auth.startswith("Basic "):
                    user, _, password = base64.b64decode(auth[6:]).decode().partition(":")
                    subject = user if server.users.get(user) == password else None
                elif auth:
                    subject = server.check_signature(auth, url, query)
                with server.lock:
                    server.requests.append({"path": parts.path, "query": query, "auth": auth, "ok": bool(subject)})
                if parts.path != "/token" or subject is None:
                    self.send_response(401)
                    body = b'{"errors":[{"code":"UNAUTHORIZED","message":"access denied"}]}'
                else:
                    token = server.jwt(subject, query.get("scope", []))
                    self.send_response(200)
                    body = json.dumps({"token": token, "expires_in": 300}).encode()
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        return Handler
