"""RFC 8705 certificate-bound access tokens: `cnf.x5t#S256` against the mTLS peer (pure).

The peer's certificate is only what Envoy verified itself: on the HTTP door the
`x-tollgate-attr-peer-cert-sha256` attribute (Envoy's %DOWNSTREAM_PEER_FINGERPRINT_256%,
set by Envoy over any client header of that name), on the gRPC door
`attributes.source.certificate` (`include_peer_certificate: true`). A client's
x-forwarded-client-cert is never read: it is only as trustworthy as every proxy's
forward_client_cert_details setting in front of us.
"""

from __future__ import annotations

import base64
import hmac
import urllib.parse
from collections.abc import Mapping
from typing import Any, Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from authz_service.identity.errors import InvalidCredential
from authz_service.models import RequestContext

CertificateBinding = Literal["require", "when_present"]
CLAIM = "x5t#S256"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def bound_thumbprint(claims: Mapping[str, Any]) -> str | None:
    """The token's `cnf.x5t#S256`, None when it is not certificate-bound.

    Raises InvalidCredential for a `cnf` that is there but unreadable: a binding the
    token meant to have is never dropped.
    """
    cnf = claims.get("cnf")
    if cnf is None:
        return None
    if not isinstance(cnf, dict):
        raise InvalidCredential("malformed 'cnf' claim")
    value = cnf.get(CLAIM)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) != 43:  # b64url of 32 bytes, unpadded
        raise InvalidCredential("malformed 'cnf.x5t#S256' claim")
    return value


def peer_thumbprint(ctx: RequestContext) -> str | None:
    """b64url(SHA-256(DER)) of the client certificate Envoy verified, None without one."""
    if ctx.peer_certificate_sha256:
        try:
            return b64url(bytes.fromhex(ctx.peer_certificate_sha256))
        except ValueError:
            return None
    if ctx.peer_certificate_pem:
        # Envoy sends the URL-encoded PEM of the peer's leaf certificate.
        pem = urllib.parse.unquote(ctx.peer_certificate_pem).encode("ascii", "replace")
        try:
            certificate = x509.load_pem_x509_certificate(pem)
        except ValueError:
            return None
        return b64url(certificate.fingerprint(hashes.SHA256()))
    return None


def check_binding(bound: str | None, ctx: RequestContext, mode: CertificateBinding) -> None:
    """Refuse a certificate-bound token whose certificate is not the peer's, and (mode
    `require`) any token that is not certificate-bound."""
    if bound is None:
        if mode == "require":
            raise InvalidCredential("token is not bound to a client certificate")
        return
    peer = peer_thumbprint(ctx)
    if peer is None:
        raise InvalidCredential("token is bound to a client certificate; none was presented")
    if not hmac.compare_digest(peer.encode(), bound.encode()):
        raise InvalidCredential("token is bound to another client certificate")
