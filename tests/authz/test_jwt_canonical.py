"""One token, one string: non-canonical base64url in any JWS segment is refused.

base64url leaves unused low bits in a segment's last character (2 bits when the
segment length is 2 mod 4, 4 bits when 3 mod 4). Decoders ignore them, so one
signature has up to 16 spellings: each would verify, and each would be its own
token-cache entry. Only the canonical spelling (those bits zero) is accepted.
"""

from __future__ import annotations

import json

import pytest

from authz_service.identity.jwt_verifier import TokenError, parse, verify_signature
from authz_service.keys.keyset import parse_jwks
from tests.kits import jwt_kit

RSA = jwt_kit.rsa_key("rsa-1")
KEYS = parse_jwks(json.dumps(jwt_kit.jwks(RSA, jwt_kit.ec_key("ec-1"))))

_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def respell_last_char(segment: str) -> list[str]:
    """Every other spelling of segment that decodes to the same bytes."""
    unused_bits = {2: 4, 3: 2}.get(len(segment) % 4, 0)
    index = _ALPHABET.index(segment[-1])
    base = index & ~((1 << unused_bits) - 1)
    spellings = [_ALPHABET[base | low] for low in range(1 << unused_bits)]
    return [segment[:-1] + c for c in spellings if c != segment[-1]]


def test_a_segment_with_unused_bits_has_other_spellings() -> None:
    # RS256 signatures are 256 bytes: 342 characters, 4 unused bits -> 15 variants.
    signature = jwt_kit.mint(RSA).rsplit(".", 1)[1]
    assert len(signature) % 4 == 2
    assert len(respell_last_char(signature)) == 15


@pytest.mark.parametrize("segment_index", [0, 1, 2])
def test_non_canonical_base64url_in_any_segment_is_refused(segment_index: int) -> None:
    # Pad the header and payload until the segment has unused bits in its last character.
    for pad in range(1, 8):
        token = jwt_kit.mint(RSA, headers={"x": "x" * pad}, pad="x" * pad)
        segments = token.split(".")
        if len(segments[segment_index]) % 4 in (2, 3):
            break
    parse(token)  # the canonical spelling is fine
    variants = respell_last_char(segments[segment_index])
    assert variants
    for variant in variants:
        forged = segments.copy()
        forged[segment_index] = variant
        with pytest.raises(TokenError, match=r"^malformed token$"):
            parse(".".join(forged))


def test_the_canonical_signature_still_verifies() -> None:
    parsed = parse(jwt_kit.mint(RSA))
    verify_signature(parsed, "RS256", KEYS)
