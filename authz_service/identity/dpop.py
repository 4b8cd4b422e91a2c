"""RFC 9449 DPoP: the proof a client sends beside a DPoP-bound access token (pure).

`DpopVerifier.verify` checks one `DPoP` proof header against the request and the
token: a compact JWS with `typ: dpop+jwt`, an allow-listed asymmetric `alg` (never
`none`, never HS*), a public `jwk` in its header that verifies its signature, `htm`
and `htu` naming this request, `iat` inside the window, `ath` the hash of the token
and, when server nonces are on, a current `nonce`. It answers the key's RFC 7638
thumbprint (the token's `cnf.jkt` must equal it) and a ProofUse: the proof's `jti`,
which the pipeline records in a replay store (I/O, identity/dpop_replay.py) before
any answer, so a proof is spent once within its window.

`htu` is compared after the same normalisation Envoy applies to the request path
(normalize_path, merge_slashes: dot segments, doubled slashes, %-encoded unreserved
characters) and without query or fragment (RFC 9449 §4.3); the request's own URL is
Envoy's :scheme, :authority and normalised path.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import struct
import urllib.parse
from typing import Any, Literal

from pydantic import Field, field_validator

from authz_service.config_base import Model
from authz_service.identity.base import ProofUse
from authz_service.identity.errors import DpopRefusal
from authz_service.identity.jwt_verifier import (
    TokenError,
    check_header,
    numeric_date,
    parse,
    verify_with_key,
)
from authz_service.keys.keyset import KeySetError, verification_key
from authz_service.models import RequestContext

DpopMode = Literal["require", "allow", "off"]
PROOF_HEADER = "dpop"
PROOF_TYPE = "dpop+jwt"
ASYMMETRIC = ("ES256", "ES384", "ES512", "EdDSA", "RS256", "RS384", "RS512",
              "PS256", "PS384", "PS512")
# Members that only a private (or symmetric) JWK has.
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
# RFC 7638 §3.2: the required members of each key type, the only ones hashed.
_THUMBPRINT_MEMBERS = {"EC": ("crv", "kty", "x", "y"), "RSA": ("e", "kty", "n"),
                       "OKP": ("crv", "kty", "x")}
_DEFAULT_PORTS = {"https": 443, "http": 80}
_PERCENT = re.compile(r"%([0-9A-Fa-f]{2})")
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_SLASHES = re.compile(r"/{2,}")
MAX_JTI = 256
MAX_HTU = 4096


class DpopSettings(Model):
    """How a JWT source checks DPoP proofs (`dpop_proof:`)."""

    algorithms: list[str] = Field(default_factory=lambda: ["ES256", "EdDSA", "RS256", "PS256"])
    # A proof is accepted while iat is at most this old (and its jti remembered as long).
    max_age_seconds: float = Field(60, gt=0, le=3600)
    clock_skew_seconds: float = Field(5, ge=0, le=300)
    # Server-provided nonces (RFC 9449 §8): set to the env var holding a shared secret
    # (the same on every replica). Unset: no nonce is asked for.
    nonce_secret_env: str | None = None
    nonce_lifetime_seconds: float = Field(60, ge=5, le=3600)

    @field_validator("algorithms")
    @classmethod
    def _asymmetric_only(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("at least one DPoP proof algorithm is required")
        for alg in value:
            if alg not in ASYMMETRIC:
                raise ValueError(f"DPoP proof algorithm '{alg}' is not allowed (asymmetric "
                                 f"only: {', '.join(ASYMMETRIC)})")
        return value


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def jwk_thumbprint(jwk: dict[str, Any]) -> str:
    """RFC 7638 SHA-256 thumbprint of a public JWK (b64url)."""
    members = _THUMBPRINT_MEMBERS.get(jwk.get("kty"))  # type: ignore[arg-type]
    if members is None:
        raise TokenError("unsupported proof key type")
    values = {name: jwk.get(name) for name in members}
    if not all(isinstance(v, str) for v in values.values()):
        raise TokenError("malformed proof key")
    canonical = json.dumps(values, separators=(",", ":"), sort_keys=True)
    return b64url(hashlib.sha256(canonical.encode()).digest())


def normal_path(path: str) -> str:
    """A path as Envoy's normalize_path + merge_slashes leave it (RFC 3986 §6.2.2)."""
    def decode(match: re.Match[str]) -> str:
        char = chr(int(match[1], 16))
        return char if char in _UNRESERVED else "%" + match[1].upper()

    path = _SLASHES.sub("/", _PERCENT.sub(decode, path or "/"))
    if not path.startswith("/"):
        path = "/" + path
    segments = path.split("/")[1:]
    kept: list[str] = []
    for index, segment in enumerate(segments):
        last = index == len(segments) - 1
        if segment in (".", ".."):
            if segment == ".." and kept:
                kept.pop()
            if last:
                kept.append("")
        else:
            kept.append(segment)
    return "/" + "/".join(kept)


def normal_url(scheme: str, authority: str, path: str) -> str | None:
    """scheme://host[:port]/path, lower-case, default port dropped; None if malformed."""
    scheme = scheme.lower()
    if scheme not in _DEFAULT_PORTS or not authority or "@" in authority:
        return None
    try:
        parts = urllib.parse.urlsplit(f"{scheme}://{authority}")
        port = parts.port
    except ValueError:
        return None
    host = parts.hostname
    if not host:
        return None
    if ":" in host:
        host = f"[{host}]"
    if port is not None and port != _DEFAULT_PORTS[scheme]:
        host = f"{host}:{port}"
    return f"{scheme}://{host}{normal_path(path)}"


def normal_htu(htu: str) -> str | None:
    """A proof's htu as normal_url, query and fragment dropped."""
    if len(htu) > MAX_HTU:
        return None
    try:
        parts = urllib.parse.urlsplit(htu)
    except ValueError:
        return None
    return normal_url(parts.scheme, parts.netloc, parts.path)


def request_url(ctx: RequestContext) -> str | None:
    return normal_url(ctx.scheme, ctx.host, ctx.path)


class NonceIssuer:
    """Stateless server nonces: the time bucket and its HMAC under a shared secret, so
    every replica that holds the secret issues and accepts the same ones."""

    def __init__(self, secret: bytes, lifetime: float) -> None:
        self._secret = secret
        self.lifetime = lifetime

    def current(self, now: float) -> str:
        return self._nonce(int(now // self.lifetime))

    def accepts(self, nonce: str, now: float) -> bool:
        bucket = int(now // self.lifetime)
        # The bucket before still counts: a nonce handed out just before a boundary.
        return any(hmac.compare_digest(nonce.encode(), self._nonce(b).encode())
                   for b in (bucket, bucket - 1))

    def _nonce(self, bucket: int) -> str:
        stamp = struct.pack(">q", bucket)
        return b64url(stamp + hmac.new(self._secret, stamp, hashlib.sha256).digest()[:16])


class DpopVerifier:
    def __init__(self, settings: DpopSettings, nonces: NonceIssuer | None = None) -> None:
        self.algorithms = frozenset(settings.algorithms)
        self.algs = " ".join(settings.algorithms)
        self.max_age = settings.max_age_seconds
        self.skew = settings.clock_skew_seconds
        self.nonces = nonces

    def refusal(self, description: str, error: str = "invalid_dpop_proof") -> DpopRefusal:
        return DpopRefusal(description, self.algs, error)

    def read_proof(self, ctx: RequestContext, max_bytes: int) -> str:
        """The request's one DPoP proof header."""
        proof = ctx.headers.get(PROOF_HEADER)
        if proof is None:
            raise self.refusal("missing DPoP proof")
        # Envoy joins repeated headers with ','; a compact JWS has none.
        if PROOF_HEADER in ctx.duplicate_headers or "," in proof:
            raise self.refusal("more than one DPoP proof")
        proof = proof.strip()
        if not proof or len(proof) > max_bytes:
            raise self.refusal("malformed DPoP proof")
        return proof

    def verify(
        self, proof: str, ctx: RequestContext, token_digest: bytes, now: float
    ) -> tuple[str, ProofUse]:
        """(the proof key's RFC 7638 thumbprint, the use to record), or DpopRefusal.

        `token_digest`: SHA-256 of the access token, which `ath` must carry.
        """
        try:
            parsed = parse(proof)
        except TokenError:
            raise self.refusal("malformed DPoP proof") from None
        header, claims = parsed.header, parsed.claims
        try:
            alg = check_header(header, self.algorithms, PROOF_TYPE)
        except TokenError as exc:
            raise self.refusal(f"DPoP proof: {exc}") from None
        jwk = header.get("jwk")
        if not isinstance(jwk, dict):
            raise self.refusal("DPoP proof has no 'jwk' header")
        if jwk.get("kty") == "oct":
            raise self.refusal("DPoP proof key is symmetric")
        if _PRIVATE_MEMBERS & jwk.keys():
            raise self.refusal("DPoP proof key contains private key material")
        try:
            key = verification_key(jwk)
            thumbprint = jwk_thumbprint(jwk)
        except (KeySetError, TokenError, ValueError) as exc:
            raise self.refusal(f"DPoP proof key not usable: {exc}") from None
        if alg not in key.algorithms:
            raise self.refusal("DPoP proof algorithm does not fit its key")
        try:
            verify_with_key(parsed, alg, key.key)
        except TokenError:
            raise self.refusal("DPoP proof signature verification failed") from None
        jti = claims.get("jti")
        if not isinstance(jti, str) or not jti or len(jti) > MAX_JTI or not jti.isprintable():
            raise self.refusal("DPoP proof needs a 'jti'")
        if claims.get("htm") != ctx.method:
            raise self.refusal("DPoP proof is for another method")
        htu = claims.get("htu")
        if not isinstance(htu, str):
            raise self.refusal("DPoP proof needs an 'htu'")
        target = request_url(ctx)
        if target is None or normal_htu(htu) != target:
            raise self.refusal("DPoP proof is for another URL")
        try:
            iat = numeric_date(claims, "iat")
        except TokenError:
            iat = None
        if iat is None:
            raise self.refusal("DPoP proof needs an 'iat'")
        if iat > now + self.skew:
            raise self.refusal("DPoP proof issued in the future")
        if iat < now - self.max_age - self.skew:
            raise self.refusal("DPoP proof is too old")
        ath = claims.get("ath")
        if not isinstance(ath, str) or not hmac.compare_digest(
                ath.encode(), b64url(token_digest).encode()):
            raise self.refusal("DPoP proof is for another access token ('ath')")
        if self.nonces is not None:
            nonce = claims.get("nonce")
            if not isinstance(nonce, str) or not self.nonces.accepts(nonce, now):
                raise DpopRefusal("DPoP proof needs a current server nonce", self.algs,
                                  "use_dpop_nonce", self.nonces.current(now))
        replay_key = hashlib.sha256(f"{thumbprint}\x00{jti}".encode()).hexdigest()
        return thumbprint, ProofUse(replay_key, iat + self.max_age + self.skew, self.algs)
