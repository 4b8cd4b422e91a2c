"""Sender-constrained access tokens, for every source whose tokens carry claims (pure).

A token's `cnf` claim binds it to its holder: `cnf.x5t#S256` to the client certificate
of the mTLS connection (RFC 8705 §3), `cnf.jkt` to the key that signs a DPoP proof sent
with each request (RFC 9449 §6). The claims may be a JWT's own (RFC 7800) or an
introspection answer's (RFC 7662 §2.2; RFC 8705 §3.2, RFC 9449 §6.2): either way a
resource server must hold the token to its binding, so a token that carries one is
always held to it, whatever the source's modes. The modes only add refusals:
`certificate_binding: require` refuses tokens that are not certificate-bound,
`dpop: require` those that are not DPoP-bound, `dpop: off` those that are.

`read_binding` turns the claims into a TokenBinding once, when the token is verified
(or introspected), and the binding is cached with the verdict; `TokenBindingRules.admit`
refuses what the source's modes never accept (a JWT source before it caches the token);
`hold` does that and checks the binding on every request, cached or not: the peer
certificate is the one bound, and a DPoP-bound token comes under the DPoP scheme with a
fresh proof by its key for this token (`ath`), whose jti the pipeline spends (Proven).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import Field, field_validator

from authz_service.config_base import Model
from authz_service.identity.base import Proven
from authz_service.identity.cert_binding import CertificateBinding, bound_thumbprint, check_binding
from authz_service.identity.credentials import (
    DPOP_AUTHORIZATION,
    Location,
    find_token,
    read_header_credential,
)
from authz_service.identity.dpop import (
    PROOF_HEADER,
    DpopMode,
    DpopSettings,
    DpopVerifier,
    NonceIssuer,
)
from authz_service.identity.errors import DpopRefusal, InvalidCredential, MalformedRequest
from authz_service.models import Identity, RequestContext


@dataclass(frozen=True, slots=True)
class TokenBinding:
    """What a sender-constrained token is bound to (its `cnf` claim): checked on every
    request, cached or not."""

    x5t_s256: str | None = None  # RFC 8705: the client certificate's thumbprint
    jkt: str | None = None  # RFC 9449: the DPoP proof key's thumbprint


class BindingSettings(Model):
    """A source's settings for sender-constrained tokens (docs/authz.md
    "Sender-constrained tokens"). A token that carries a binding (cnf.x5t#S256,
    cnf.jkt) is always held to it."""

    certificate_binding: CertificateBinding = "when_present"  # require: only bound tokens
    dpop: DpopMode = "off"  # allow: DPoP and bearer tokens; require: DPoP only
    dpop_proof: DpopSettings = Field(default_factory=DpopSettings)

    @field_validator("dpop", mode="before")
    @classmethod
    def _yaml_off(cls, value: object) -> object:
        # YAML 1.1 reads an unquoted `off` as false: `dpop: off` means what it says.
        return "off" if value is False else value


class TokenBindingRules:
    """One source's binding rules, built once at load (ValueError: unusable settings)."""

    def __init__(self, settings: BindingSettings, max_token_bytes: int) -> None:
        self.certificate = settings.certificate_binding
        self.dpop_mode = settings.dpop
        self.max_token_bytes = max_token_bytes
        self.dpop: DpopVerifier | None = None
        if settings.dpop != "off":
            self.dpop = DpopVerifier(settings.dpop_proof, _nonces(settings.dpop_proof))
        self.dpop_algs = self.dpop.algs if self.dpop is not None else ""  # for the challenge

    def find(self, ctx: RequestContext, locations: Sequence[Location]) -> tuple[str, bool] | None:
        """The request's token and whether it came under the DPoP scheme (RFC 9449 §7.1,
        read only when DPoP is on); None without one."""
        token = find_token(ctx, locations, self.max_token_bytes)
        if self.dpop is not None:
            dpop_token = read_header_credential(ctx, DPOP_AUTHORIZATION, self.max_token_bytes)
            if dpop_token is not None:
                if token is not None:
                    raise MalformedRequest("credentials sent by more than one method")
                return dpop_token, True
        return (token, False) if token is not None else None

    def admit(self, binding: TokenBinding | None) -> None:
        """Refuse a token this source's modes never accept, whatever the request."""
        if (binding is None or binding.x5t_s256 is None) and self.certificate == "require":
            raise InvalidCredential("token is not bound to a client certificate")
        jkt = binding.jkt if binding is not None else None
        if jkt is None and self.dpop_mode == "require" and self.dpop is not None:
            raise self.dpop.refusal("token is not DPoP-bound", "invalid_token")
        if jkt is not None and self.dpop is None:
            raise InvalidCredential("DPoP-bound tokens are not accepted here")

    def hold(
        self, identity: Identity, binding: TokenBinding | None, ctx: RequestContext,
        digest: bytes, *, via_dpop: bool, now: float,
    ) -> Identity | Proven:
        """Per request: the certificate the token is bound to is the peer's, and a DPoP
        token comes with a fresh proof by its key for this token (`digest`: the token's
        SHA-256, the proof's `ath`); the proof's jti is spent by the pipeline."""
        self.admit(binding)
        if binding is None and not via_dpop:
            return identity  # a bearer token, sent as one
        x5t = binding.x5t_s256 if binding is not None else None
        jkt = binding.jkt if binding is not None else None
        check_binding(x5t, ctx, self.certificate)
        if not via_dpop:
            if jkt is not None:
                raise DpopRefusal("DPoP-bound token sent as a bearer token", self.dpop_algs,
                                  "invalid_token")
            return identity
        verifier = self.dpop
        if verifier is None:  # via_dpop is only set when DPoP is on
            raise InvalidCredential("DPoP is not accepted here")
        if jkt is None:
            raise verifier.refusal("token is not DPoP-bound", "invalid_token")
        proof = verifier.read_proof(ctx, self.max_token_bytes)
        thumbprint, use = verifier.verify(proof, ctx, digest, now)
        if thumbprint != jkt:
            raise verifier.refusal("DPoP proof key is not the key the token is bound to")
        return Proven(identity, use)


def read_binding(claims: Mapping[str, Any]) -> TokenBinding | None:
    """The token's `cnf` binding, None for a bearer token. Raises InvalidCredential for
    a malformed one: a binding the token meant to have is never dropped."""
    x5t = bound_thumbprint(claims)
    cnf = claims.get("cnf")
    jkt = cnf.get("jkt") if isinstance(cnf, dict) else None
    if jkt is not None and (not isinstance(jkt, str) or len(jkt) != 43):
        raise InvalidCredential("malformed 'cnf.jkt' claim")
    if x5t is None and jkt is None and cnf is not None:
        # A confirmation this service cannot check (RFC 7800 jwk, jku, kid, or none at
        # all) still says the token is bound: refused, never taken as a bearer token.
        raise InvalidCredential("unsupported confirmation method in 'cnf'")
    return TokenBinding(x5t, jkt) if x5t is not None or jkt is not None else None


def credential_headers(settings: BindingSettings) -> tuple[str, ...]:
    """The headers DPoP credentials travel in, when the source takes them."""
    return (DPOP_AUTHORIZATION.header, PROOF_HEADER) if settings.dpop != "off" else ()


def _nonces(settings: DpopSettings) -> NonceIssuer | None:
    name = settings.nonce_secret_env
    if name is None:
        return None
    secret = os.environ.get(name, "")
    if len(secret) < 16:
        raise ValueError(f"DPoP nonces: environment variable '{name}' must hold a secret of "
                         "at least 16 characters")
    return NonceIssuer(secret.encode(), settings.nonce_lifetime_seconds)
