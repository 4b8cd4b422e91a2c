"""TLS on the services' own listeners: a server certificate, optionally a client CA
(mTLS: a client certificate is then required), reloaded when the files change.

For deployments where Envoy reaches the sidecar over a network rather than a Unix
socket or loopback. The files are polled (the signature of tollgate.reload, so an
in-place write, an atomic rename and the Kubernetes Secret swap are all seen); a new
set is installed only once it loads whole and the key matches the certificate, so a
rotation caught half-written, or a broken file, keeps the last good set serving (and
is logged). New connections get the new certificate; open ones keep theirs.

gRPC takes the certificate through grpcio's certificate-config fetcher, asked at each
new handshake; the HTTP server through an `ssl.SSLContext` whose handshake callback
hands each new connection the current context.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tollgate.reload import Signature, file_signature

log = logging.getLogger("tollgate.tls")


class TlsError(ValueError):
    """TLS files that cannot serve: named, with the reason."""


@dataclass(frozen=True)
class TlsFiles:
    """Where a listener's TLS material lives (PEM)."""

    cert: Path  # the server certificate chain, leaf first
    key: Path
    client_ca: Path | None = None  # when set, clients must present a certificate it issued

    @classmethod
    def from_flags(cls, cert: str, key: str, client_ca: str) -> TlsFiles | None:
        """None when no TLS is asked for; a TlsError for half a setting."""
        if not cert and not key:
            if client_ca:
                raise TlsError("a client CA needs a server certificate and key too")
            return None
        if not cert or not key:
            raise TlsError("TLS needs both the certificate and the key")
        return cls(Path(cert), Path(key), Path(client_ca) if client_ca else None)

    def paths(self) -> tuple[Path, ...]:
        return (self.cert, self.key, *((self.client_ca,) if self.client_ca else ()))


@dataclass(frozen=True)
class TlsMaterial:
    """One checked set: the PEM bytes (for gRPC) and a server context built from them
    (for the HTTP server)."""

    cert: bytes
    key: bytes
    client_ca: bytes | None
    context: ssl.SSLContext
    generation: int


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise TlsError(f"{path}: cannot read the {what} ({exc.strerror})") from None


def load_material(files: TlsFiles, generation: int = 1) -> TlsMaterial:
    """Read and check the files; TlsError names the first problem."""
    cert = _read(files.cert, "certificate")
    key = _read(files.key, "key")
    client_ca = _read(files.client_ca, "client CA") if files.client_ca else None
    try:
        chain = x509.load_pem_x509_certificates(cert)
    except ValueError:
        raise TlsError(f"{files.cert}: not a PEM certificate") from None
    try:
        private = serialization.load_pem_private_key(key, password=None)
    except (ValueError, TypeError):
        raise TlsError(f"{files.key}: not an unencrypted PEM private key") from None
    if chain[0].public_key() != private.public_key():
        raise TlsError(f"{files.key}: does not match the certificate in {files.cert}")
    if client_ca is not None:
        try:
            x509.load_pem_x509_certificates(client_ca)
        except ValueError:
            raise TlsError(f"{files.client_ca}: not a PEM certificate") from None
    return TlsMaterial(cert, key, client_ca, _server_context(files, cert, key, client_ca),
                       generation)


def _server_context(files: TlsFiles, cert: bytes, key: bytes, client_ca: bytes | None
                    ) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    # load_cert_chain reads files only: the ones just checked, so a rotation landing in
    # between shows up as a mismatch with the bytes (checked below), not a mixed set.
    try:
        context.load_cert_chain(files.cert, files.key)
    except (ssl.SSLError, OSError) as exc:
        raise TlsError(f"{files.cert}, {files.key}: {exc}") from None
    if _read(files.cert, "certificate") != cert or _read(files.key, "key") != key:
        raise TlsError(f"{files.cert}: changed while loading (a rotation in progress)")
    if client_ca is not None:
        context.load_verify_locations(cadata=client_ca.decode("ascii", "replace"))
        context.verify_mode = ssl.CERT_REQUIRED
    return context


class ServerTls:
    """A listener's current TLS material, swapped when its files change."""

    def __init__(self, files: TlsFiles, *, interval: float = 1.0) -> None:
        self.files = files
        self.interval = interval
        self._signature = self._current_signature()
        self.current = load_material(files)  # at start, a bad file is fatal (TlsError)
        self.last_error: TlsError | None = None

    @property
    def requires_client_cert(self) -> bool:
        return self.files.client_ca is not None

    def _current_signature(self) -> Signature:
        signature: Signature = ()
        for path in self.files.paths():
            signature += file_signature(path)
        return signature

    def check(self) -> bool:
        """Reload if a file changed; True when a new set was installed."""
        signature = self._current_signature()
        if signature == self._signature:
            return False
        try:
            material = load_material(self.files, self.current.generation + 1)
        except TlsError as exc:
            # Retried at the next poll: the other half of a rotation may be on its way.
            if str(exc) != str(self.last_error):
                log.error("TLS files rejected, keeping the last good certificate",
                          extra={"error": str(exc)})
            self.last_error = exc
            return False
        self._signature = signature
        self.current = material
        self.last_error = None
        log.info("TLS certificate reloaded", extra={"file": str(self.files.cert),
                                                    "generation": material.generation})
        return True

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                self.check()
            except Exception:  # a watcher that dies silently would pin an expiring cert
                log.exception("TLS watcher error")

    # --- the HTTP server -----------------------------------------------------------

    def http_context(self) -> ssl.SSLContext:
        """The context to listen with: each new connection is handed the current one."""
        # Its own settings decide the verify mode of every connection (OpenSSL copies
        # it when the connection begins); the certificate and CA are swapped below.
        front = load_material(self.files).context

        def handshake(connection: ssl.SSLObject, _server_name: str | None,
                      _context: ssl.SSLContext) -> None:
            # Called for every ClientHello, with or without SNI: the certificate and the
            # client CA (verification reads the new context's store) of this moment.
            connection.context = self.current.context

        front.sni_callback = handshake
        return front

    # --- grpcio --------------------------------------------------------------------

    def grpc_credentials(self) -> Any:
        """grpc.ServerCredentials that ask for the current certificate at each handshake."""
        import grpc  # noqa: PLC0415 - the HTTP-only paths need no grpc

        handed = [self.current.generation]  # what this server holds

        def config(material: TlsMaterial) -> Any:
            return grpc.ssl_server_certificate_configuration(
                [(material.key, material.cert)], root_certificates=material.client_ca)

        def fetch() -> Any:
            # On a gRPC core thread, per new connection: None keeps what it has.
            material = self.current
            if handed[0] == material.generation:
                return None
            handed[0] = material.generation
            return config(material)

        return grpc.dynamic_ssl_server_credentials(
            config(self.current), fetch,
            require_client_authentication=self.requires_client_cert)
