"""JWS compact token verification (pure: keys and the clock are arguments).

Parsing is strict and done here so that every rejection has a precise reason:
exactly three canonical base64url segments (five means JWE: refused), JSON objects without
duplicate names, an allow-listed `alg` bound to the key type, no unknown `crit`,
no nested JWT. Header parameters that point at keys (`jku`, `x5u`, `jwk`, `x5c`)
are never used: keys come only from the configured source. Signature math is
PyJWT's algorithm implementations over `cryptography`.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from dataclasses import dataclass
from typing import Any

from jwt.algorithms import Algorithm, get_default_algorithms

from authz_service.identity.base import audience_accepted
from authz_service.keys.keyset import KeySet

_ALGORITHMS: dict[str, Algorithm] = {
    name: alg for name, alg in get_default_algorithms().items() if name != "none"
}
_B64URL = re.compile(rb"^[A-Za-z0-9_-]*$")


class TokenError(ValueError):
    """The token is not acceptable; the message is safe to show the client."""


class UnknownKeyId(TokenError):
    """No configured key has this kid: maybe the issuer rotated keys."""

    def __init__(self, kid: str, message: str = "unknown key id") -> None:
        super().__init__(message)
        self.kid = kid


class NoKeys(UnknownKeyId):
    """The key set is empty: the issuer's keys never arrived. Not the token's fault."""

    def __init__(self, kid: str) -> None:
        super().__init__(kid, "signing keys unavailable")


@dataclass(frozen=True, slots=True)
class ParsedToken:
    header: dict[str, Any]
    claims: dict[str, Any]
    signing_input: bytes
    signature: bytes


def _b64decode(segment: bytes) -> bytes:
    if not _B64URL.match(segment):
        raise TokenError("malformed token")
    try:
        decoded = base64.urlsafe_b64decode(segment + b"=" * (-len(segment) % 4))
    except (binascii.Error, ValueError):
        raise TokenError("malformed token") from None
    # The decoder ignores the unused low bits of the last character, so up to 16
    # strings decode to the same bytes: one signature, many tokens (and as many
    # token-cache entries). Only the canonical spelling is a token.
    if base64.urlsafe_b64encode(decoded).rstrip(b"=") != segment:
        raise TokenError("malformed token")
    return decoded


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for name, value in pairs:
        if name in result:
            raise TokenError("malformed token: duplicate member")
        result[name] = value
    return result


def _no_constant(name: str) -> Any:
    # NaN / Infinity / -Infinity are not JSON (RFC 8259 §6); Python accepts them.
    raise TokenError("malformed token")


def _json_object(raw: bytes) -> dict[str, Any]:
    try:
        value = json.loads(raw, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except TokenError:
        raise
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise TokenError("malformed token") from None
    if not isinstance(value, dict):
        raise TokenError("malformed token")
    return value


def parse(token: str) -> ParsedToken:
    """Split and decode a compact JWS; no signature check yet."""
    try:
        raw = token.encode("ascii")
    except UnicodeEncodeError:
        raise TokenError("malformed token") from None
    parts = raw.split(b".")
    if len(parts) == 5:
        raise TokenError("encrypted tokens (JWE) are not accepted")
    if len(parts) != 3 or not parts[0] or not parts[1]:
        raise TokenError("malformed token")
    header = _json_object(_b64decode(parts[0]))
    claims = _json_object(_b64decode(parts[1]))
    signature = _b64decode(parts[2])
    return ParsedToken(header, claims, parts[0] + b"." + parts[1], signature)


def check_header(header: dict[str, Any], allowed: frozenset[str], token_type: str | None) -> str:
    """Validate the JOSE header; return the algorithm."""
    alg = header.get("alg")
    if not isinstance(alg, str) or alg.lower() == "none":
        raise TokenError("algorithm not allowed")
    if alg not in allowed or alg not in _ALGORITHMS:
        raise TokenError("algorithm not allowed")
    if "crit" in header:
        # RFC 7515 §4.1.11: we understand no extensions, so any crit is fatal.
        raise TokenError("unsupported critical header")
    cty = header.get("cty")
    if isinstance(cty, str) and cty.upper() == "JWT":
        raise TokenError("nested tokens are not accepted")
    kid = header.get("kid")
    if kid is not None and (not isinstance(kid, str) or len(kid) > 256):
        raise TokenError("malformed key id")
    if token_type is not None:
        typ = header.get("typ")
        if not isinstance(typ, str) or _media_type(typ) != _media_type(token_type):
            raise TokenError("wrong token type")
    return alg


def _media_type(value: str) -> str:
    # RFC 7515 §4.1.9: "application/" may be omitted and the comparison is case-insensitive.
    lowered = value.lower()
    return lowered[len("application/") :] if lowered.startswith("application/") else lowered


def verify_signature(token: ParsedToken, alg: str, keys: KeySet) -> None:
    kid = token.header.get("kid")
    if not keys.keys:
        raise NoKeys(kid if isinstance(kid, str) else "")
    candidates = keys.candidates(kid, alg)
    if not candidates:
        if kid is not None and not keys.has_kid(kid):
            raise UnknownKeyId(kid)
        raise TokenError("no key accepts this algorithm")
    algorithm = _ALGORITHMS[alg]
    # Without a kid several keys may fit: bounded by the key set's size.
    for key in candidates:
        if algorithm.verify(token.signing_input, key.key, token.signature):
            return
    raise TokenError("signature verification failed")


def verify_with_key(token: ParsedToken, alg: str, key: object) -> None:
    """The signature under this one key (a DPoP proof's own `jwk`); `alg` allow-listed."""
    if not _ALGORITHMS[alg].verify(token.signing_input, key, token.signature):
        raise TokenError("signature verification failed")


@dataclass(frozen=True, slots=True)
class ClaimRules:
    issuer: str
    audiences: frozenset[str]
    required: frozenset[str]
    skew: float
    max_lifetime: float | None


def numeric_date(claims: dict[str, Any], name: str) -> float | None:
    if name not in claims:
        return None
    value = claims[name]
    # null, booleans, strings and non-finite numbers (1e400 parses as inf) are
    # not NumericDates: accepting them would make `exp` never expire.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TokenError(f"malformed '{name}' claim")
    try:
        number = float(value)
    except OverflowError:  # an integer too large for a float
        raise TokenError(f"malformed '{name}' claim") from None
    if not math.isfinite(number):
        raise TokenError(f"malformed '{name}' claim")
    return number


def check_claims(claims: dict[str, Any], rules: ClaimRules, now: float) -> float:
    """Validate registered claims at time `now`; return when the token stops being valid."""
    missing = [name for name in sorted(rules.required) if name not in claims]
    if missing:
        raise TokenError(f"missing required claim '{missing[0]}'")
    if claims.get("iss") != rules.issuer:
        raise TokenError("wrong issuer")
    if rules.audiences and not audience_accepted(claims.get("aud"), rules.audiences):
        raise TokenError("audience not accepted")
    exp = numeric_date(claims, "exp")
    nbf = numeric_date(claims, "nbf")
    iat = numeric_date(claims, "iat")
    if exp is not None and now >= exp + rules.skew:
        raise TokenError("token expired")
    if nbf is not None and now < nbf - rules.skew:
        raise TokenError("token not yet valid")
    if iat is not None and now < iat - rules.skew:
        raise TokenError("token issued in the future")
    if rules.max_lifetime is not None:
        if exp is None:
            raise TokenError("missing required claim 'exp'")
        start = iat if iat is not None else nbf
        if start is None or exp - start > rules.max_lifetime:
            raise TokenError("token lifetime too long")
    return exp + rules.skew if exp is not None else float("inf")
