"""TLS for the gRPC server: `corral serve --tls-cert --tls-key [--tls-client-ca]`.

With a client CA the server asks every client for a certificate signed by it and refuses a handshake
without one (mutual TLS). The files are read and checked at start-up, so a wrong path or a key that is
not PEM stops `corral serve` with a message naming the file instead of failing at the first handshake.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc


class TLSError(ValueError):
    """A certificate or key file cannot be used; the message names it."""


def read_pem(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise TLSError(f"{what} {path!r}: {exc.strerror or exc}") from None
    if b"-----BEGIN " not in data:
        raise TLSError(f"{what} {path!r} is not a PEM file")
    return data


@dataclass(frozen=True)
class ServerTLS:
    cert: str
    key: str
    client_ca: str = ""

    @classmethod
    def from_options(cls, cert: str, key: str, client_ca: str = "") -> ServerTLS | None:
        """None when no option is set; TLSError when only some are, or a file is unusable."""
        if not (cert or key or client_ca):
            return None
        if not (cert and key):
            raise TLSError("TLS needs both --tls-cert and --tls-key")
        tls = cls(cert, key, client_ca)
        tls.grpc_credentials()  # reads and checks the files now
        return tls

    def grpc_credentials(self) -> grpc.ServerCredentials:
        chain = read_pem(self.cert, "certificate")
        key = read_pem(self.key, "private key")
        if b"PRIVATE KEY-----" not in key:
            raise TLSError(f"private key {self.key!r} holds no private key")
        if self.client_ca:
            return grpc.ssl_server_credentials([(key, chain)],
                                               root_certificates=read_pem(self.client_ca, "client CA"),
                                               require_client_auth=True)
        return grpc.ssl_server_credentials([(key, chain)])
