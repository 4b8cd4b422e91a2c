"""Development certificates for the local stack: a CA, a server cert and SPIFFE client certs.

Everything is written into the run directory (gitignored); private keys get mode 0600.
Existing files are reused while they parse, chain to the CA and stay valid for a day,
so restarting `tollgate up` does not invalidate certificates a user already trusts.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

TRUST_DOMAIN = "tollgate.local"
ADMIN_SPIFFE_ID = f"spiffe://{TRUST_DOMAIN}/ns/demo/sa/admin"
INTRUDER_SPIFFE_ID = f"spiffe://{TRUST_DOMAIN}/ns/demo/sa/intruder"
_VALIDITY = dt.timedelta(days=30)
_MIN_REMAINING = dt.timedelta(days=1)


@dataclass(frozen=True)
class CertPair:
    """A certificate and its private key on disk (PEM)."""

    cert: Path
    key: Path


@dataclass(frozen=True)
class DevCerts:
    """The files `tollgate up` and the tests hand to Envoy and curl."""

    ca: CertPair
    server: CertPair
    admin: CertPair
    intruder: CertPair


def ensure_dev_certs(directory: Path) -> DevCerts:
    """Create (or reuse) the CA, server and client certificates under `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    certs = DevCerts(
        ca=_pair(directory, "ca"),
        server=_pair(directory, "server"),
        admin=_pair(directory, "client-admin"),
        intruder=_pair(directory, "client-intruder"),
    )
    if all(_reusable(p, certs.ca.cert) for p in (certs.ca, certs.server, certs.admin,
                                                   certs.intruder)):
        return certs
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Tollgate dev CA")])
    ca_cert = (
        _builder(ca_name, ca_name, ca_key.public_key(), now)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    _write(certs.ca, ca_cert, ca_key)
    server_sans: list[x509.GeneralName] = [
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
    ]
    _issue(certs.server, common_name="localhost", sans=server_sans,
           usage=ExtendedKeyUsageOID.SERVER_AUTH, ca_cert=ca_cert, ca_key=ca_key, now=now)
    for pair, spiffe_id in ((certs.admin, ADMIN_SPIFFE_ID), (certs.intruder, INTRUDER_SPIFFE_ID)):
        _issue(pair, common_name=spiffe_id.rsplit("/", 1)[-1],
               sans=[x509.UniformResourceIdentifier(spiffe_id)],
               usage=ExtendedKeyUsageOID.CLIENT_AUTH, ca_cert=ca_cert, ca_key=ca_key, now=now)
    return certs


def _pair(directory: Path, stem: str) -> CertPair:
    return CertPair(cert=directory / f"{stem}.crt", key=directory / f"{stem}.key")


def _reusable(pair: CertPair, ca_path: Path) -> bool:
    """True when both files exist, the cert is valid a while longer and the CA signed it."""
    try:
        cert = x509.load_pem_x509_certificate(pair.cert.read_bytes())
        serialization.load_pem_private_key(pair.key.read_bytes(), password=None)
        ca = x509.load_pem_x509_certificate(ca_path.read_bytes())
        cert.verify_directly_issued_by(ca)
    except (OSError, ValueError, TypeError, InvalidSignature):
        return False
    return cert.not_valid_after_utc - dt.datetime.now(dt.UTC) > _MIN_REMAINING


def _builder(
    subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey,
    now: dt.datetime,
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
    )


def _issue(
    pair: CertPair, *, common_name: str, sans: list[x509.GeneralName],
    usage: x509.ObjectIdentifier, ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey, now: dt.datetime,
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    cert = (
        _builder(name, ca_cert.subject, key.public_key(), now)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    _write(pair, cert, key)


def _write(pair: CertPair, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
    pair.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    write_private(
        pair.key,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )


def write_private(path: Path, data: bytes) -> None:
    """Write `data` to a file only its owner can read (created 0600, never world-readable)."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
