"""Certificates for the TLS tests, made with the `cryptography` package: a CA, a server certificate for
127.0.0.1/localhost, a client certificate signed by the CA, and a self-signed client the CA never saw."""

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def _key():
    return ec.generate_private_key(ec.SECP256R1())


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(subject_key, subject: str, issuer_key, issuer: str, *, ca: bool, usage=None, san=None):
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(_name(issuer))
               .public_key(subject_key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if usage:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _write(path: Path, cert=None, key=None) -> Path:
    if cert is not None:
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    else:
        path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return path


@dataclass
class Certs:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    rogue_cert: Path
    rogue_key: Path

    def read(self, name: str) -> bytes:
        return getattr(self, name).read_bytes()


def make_certs(folder: Path) -> Certs:
    folder.mkdir(parents=True, exist_ok=True)
    ca_key = _key()
    ca = _cert(ca_key, "corral test CA", ca_key, "corral test CA", ca=True)
    server_key = _key()
    server = _cert(server_key, "localhost", ca_key, "corral test CA", ca=False, usage=ExtendedKeyUsageOID.SERVER_AUTH,
                   san=[x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    client_key = _key()
    client = _cert(client_key, "corral client", ca_key, "corral test CA", ca=False,
                   usage=ExtendedKeyUsageOID.CLIENT_AUTH)
    rogue_key = _key()
    rogue = _cert(rogue_key, "rogue client", rogue_key, "rogue client", ca=False, usage=ExtendedKeyUsageOID.CLIENT_AUTH)
    return Certs(
        ca=_write(folder / "ca.pem", ca),
        server_cert=_write(folder / "server.pem", server), server_key=_write(folder / "server-key.pem", key=server_key),
        client_cert=_write(folder / "client.pem", client), client_key=_write(folder / "client-key.pem", key=client_key),
        rogue_cert=_write(folder / "rogue.pem", rogue), rogue_key=_write(folder / "rogue-key.pem", key=rogue_key),
    )
