"""`tollgate devcerts`: a development CA, a localhost server cert and SPIFFE client certs.

Everything is written into the run dir (never committed); private keys are 0600.
Files are reused while they exist and are valid for at least another day, so the
CA a user trusted in their curl lines stays the same across runs.
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

TRUST_DOMAIN = "tollgate.local"
ADMIN_SPIFFE = f"spiffe://{TRUST_DOMAIN}/ns/demo/sa/admin"
INTRUDER_SPIFFE = f"spiffe://{TRUST_DOMAIN}/ns/demo/sa/intruder"
CLIENTS = {"admin": ADMIN_SPIFFE, "intruder": INTRUDER_SPIFFE}
_VALIDITY = dt.timedelta(days=30)
_MIN_REMAINING = dt.timedelta(days=1)


@dataclass(frozen=True)
class DevCerts:
    """Paths of the PEM files in a run dir."""

    directory: Path

    @property
    def ca(self) -> Path:
        return self.directory / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.directory / "ca.key"

    @property
    def server_cert(self) -> Path:
        return self.directory / "server.crt"

    @property
    def server_key(self) -> Path:
        return self.directory / "server.key"

    def client_cert(self, name: str) -> Path:
        return self.directory / f"{name}.crt"

    def client_key(self, name: str) -> Path:
        return self.directory / f"{name}.key"


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    data = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    path.chmod(0o600)


def _still_valid(cert_path: Path, key_path: Path, issuer: x509.Certificate | None) -> bool:
    if not (cert_path.exists() and key_path.exists()):
        return False
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except ValueError:
        return False
    if cert.public_key() != key.public_key():
        return False
    if cert.not_valid_after_utc - dt.datetime.now(dt.UTC) < _MIN_REMAINING:
        return False
    if issuer is not None:
        try:
            cert.verify_directly_issued_by(issuer)
        except (ValueError, TypeError, InvalidSignature):
            return False
    return True


def _builder(subject: str, issuer: x509.Name | None, key: ec.EllipticCurvePrivateKey
             ) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer or name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
    )


def ensure(directory: Path) -> DevCerts:
    """Create (or reuse) the CA, server and client certificates in `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    certs = DevCerts(directory)
    if _still_valid(certs.ca, certs.ca_key, None):
        ca_cert = x509.load_pem_x509_certificate(certs.ca.read_bytes())
        loaded = serialization.load_pem_private_key(certs.ca_key.read_bytes(), password=None)
        if not isinstance(loaded, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{certs.ca_key}: expected an EC key")
        ca_key = loaded
    else:
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_cert = (
            _builder("Tollgate demo CA", None, ca_key)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                critical=True,
            )
            .sign(ca_key, hashes.SHA256())
        )
        _write_key(certs.ca_key, ca_key)
        certs.ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
        # A new CA invalidates every leaf: force them to be reissued.
        for stale in directory.glob("*.crt"):
            if stale != certs.ca:
                stale.unlink()

    leaves: dict[str, tuple[list[x509.GeneralName], ObjectIdentifier]] = {
        "server": (
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
            ExtendedKeyUsageOID.SERVER_AUTH,
        ),
    }
    for name, spiffe in CLIENTS.items():
        leaves[name] = ([x509.UniformResourceIdentifier(spiffe)], ExtendedKeyUsageOID.CLIENT_AUTH)
    for name, (sans, usage) in leaves.items():
        cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
        if _still_valid(cert_path, key_path, ca_cert):
            continue
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            _builder(f"tollgate-demo-{name}", ca_cert.subject, key)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        _write_key(key_path, key)
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return certs


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run-dir", type=Path, default=Path("run"), help="where to write them")


def run(args: argparse.Namespace) -> int:
    certs = ensure(args.run_dir)
    print(f"CA: {certs.ca}")
    return 0
