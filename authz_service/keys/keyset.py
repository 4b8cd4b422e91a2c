"""JWKS documents -> verification keys (pure: parsing only, no fetching).

Keys are bound to what they may verify: an RSA key only RS*/PS*, a P-256 key only
ES256, an OKP key only EdDSA, and a key whose JWK names an `alg` only that alg.
Symmetric (`oct`) keys in a JWKS are ignored: HS* needs an explicit shared secret.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm
from jwt.exceptions import InvalidKeyError

MIN_RSA_BITS = 2048
_EC_ALGS = {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512"}
_OKP_CURVES = {"Ed25519", "Ed448"}
_RSA_ALGS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})


class KeySetError(ValueError):
    """The JWKS document itself is unusable (not JSON, no keys array)."""


@dataclass(frozen=True, slots=True)
class VerificationKey:
    kid: str | None
    algorithms: frozenset[str]  # the JWS algs this key may verify
    key: Any  # a cryptography public key object, or bytes for HMAC secrets


@dataclass(frozen=True)
class KeySet:
    keys: tuple[VerificationKey, ...] = ()
    by_kid: dict[str, tuple[VerificationKey, ...]] = field(default_factory=dict)
    skipped: tuple[str, ...] = ()  # why some JWKs were not used, for the log

    def candidates(self, kid: str | None, alg: str) -> tuple[VerificationKey, ...]:
        """Keys that may verify a token with this kid and alg.

        A key without a kid (a shared secret, or a JWKS that omits kids) is a
        candidate for every token; a key with a kid only for tokens naming it.
        """
        if kid is None:
            pool = self.keys
        else:
            pool = self.by_kid.get(kid, ()) + tuple(k for k in self.keys if k.kid is None)
        return tuple(k for k in pool if alg in k.algorithms)

    def has_kid(self, kid: str) -> bool:
        return kid in self.by_kid

    @property
    def usable(self) -> bool:
        """At least one key verifies something: only such a set may replace another."""
        return bool(self.keys)

    def why_unusable(self) -> str:
        reasons = "; ".join(self.skipped[:3]) + ("; ..." if len(self.skipped) > 3 else "")
        if not self.skipped:
            return "JWKS has no keys"
        return f"JWKS has no usable key ({len(self.skipped)} skipped: {reasons})"


def key_set(keys: list[VerificationKey], skipped: list[str] | None = None) -> KeySet:
    by_kid: dict[str, list[VerificationKey]] = {}
    for key in keys:
        if key.kid is not None:
            by_kid.setdefault(key.kid, []).append(key)
    return KeySet(tuple(keys), {k: tuple(v) for k, v in by_kid.items()}, tuple(skipped or ()))


def parse_jwks(document: bytes | str) -> KeySet:
    """Parse a JWKS document; unusable individual keys are skipped with a reason."""
    try:
        data = json.loads(document)
    except (ValueError, UnicodeDecodeError) as exc:
        raise KeySetError(f"JWKS is not JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
        raise KeySetError("JWKS has no 'keys' array")
    keys: list[VerificationKey] = []
    skipped: list[str] = []
    for index, jwk in enumerate(data["keys"]):
        try:
            keys.append(verification_key(jwk))
        except (KeySetError, InvalidKeyError, ValueError, TypeError, KeyError) as exc:
            kid = jwk.get("kid") if isinstance(jwk, dict) else None
            skipped.append(f"key {index} (kid={kid!r}): {exc}")
    return key_set(keys, skipped)


def verification_key(jwk: Any) -> VerificationKey:
    """One public signing key from its JWK; KeySetError names what is wrong with it."""
    if not isinstance(jwk, dict):
        raise KeySetError("not an object")
    if jwk.get("use", "sig") != "sig":
        raise KeySetError(f"use={jwk.get('use')!r} is not 'sig'")
    kid = jwk.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise KeySetError("kid is not a string")
    if "d" in jwk:
        raise KeySetError("private key material in a public JWKS")
    kty = jwk.get("kty")
    key: Any
    if kty == "RSA":
        key = RSAAlgorithm.from_jwk(jwk)
        if key.key_size < MIN_RSA_BITS:
            raise KeySetError(f"RSA key of {key.key_size} bits is too small")
        algs = _RSA_ALGS
    elif kty == "EC":
        crv = jwk.get("crv")
        if crv not in _EC_ALGS:
            raise KeySetError(f"unsupported EC curve {crv!r}")
        key = ECAlgorithm.from_jwk(jwk)
        algs = frozenset({_EC_ALGS[crv]})
    elif kty == "OKP":
        if jwk.get("crv") not in _OKP_CURVES:
            raise KeySetError(f"unsupported OKP curve {jwk.get('crv')!r}")
        key = OKPAlgorithm.from_jwk(jwk)
        algs = frozenset({"EdDSA"})
    else:
        raise KeySetError(f"unsupported kty {kty!r}")
    declared = jwk.get("alg")
    if declared is not None:
        if declared not in algs:
            raise KeySetError(f"alg {declared!r} does not fit a {kty} key")
        algs = frozenset({declared})
    return VerificationKey(kid, algs, key)
