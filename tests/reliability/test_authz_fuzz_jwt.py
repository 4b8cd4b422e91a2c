"""Property-based fuzzing of JWT parsing: one token, one string; only TokenError.

Any string that parses, passes the header rules, verifies and passes the claim
rules must be one of the tokens that were minted: a mutation (a flipped or
re-spelled character, a dropped one, padding, swapped segments) never verifies.
"""

from __future__ import annotations

import json
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from authz_service.identity.jwt_verifier import (
    ClaimRules,
    TokenError,
    check_claims,
    check_header,
    parse,
    verify_signature,
)
from authz_service.keys.keyset import parse_jwks
from tests.kits import jwt_kit

pytestmark = pytest.mark.integration

RSA, EC, ED = jwt_kit.rsa_key("j-rsa"), jwt_kit.ec_key("j-ec"), jwt_kit.ed_key("j-ed")
KEYS = parse_jwks(json.dumps(jwt_kit.jwks(RSA, EC, ED)))
ALGORITHMS = frozenset({"RS256", "ES256", "EdDSA"})
MINTED_AT = time.time()
TOKENS = [jwt_kit.mint(key, sub=f"s-{key.kid}") for key in (RSA, EC, ED)]
RULES = ClaimRules(jwt_kit.ISSUER, frozenset({jwt_kit.AUDIENCE}), frozenset({"exp", "sub"}),
                   30.0, None)
B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=.+/ \x00é"


def accepted(token: str) -> bool:
    """The verifier's whole pipeline; False on TokenError, anything else propagates.

    Claims are checked at the minting time: the tokens are minted when the module is
    collected, which may be long before these tests run."""
    try:
        parsed = parse(token)
        alg = check_header(parsed.header, ALGORITHMS, None)
        verify_signature(parsed, alg, KEYS)
        check_claims(parsed.claims, RULES, MINTED_AT)
    except TokenError:
        return False
    return True


@st.composite
def mutated(draw: st.DrawFn) -> str:
    token = draw(st.sampled_from(TOKENS))
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(
            ["replace", "delete", "insert", "truncate", "swap", "append", "respell"]))
        at = draw(st.integers(0, max(len(token) - 1, 0)))
        char = draw(st.sampled_from(ALPHABET))
        if op == "replace":
            token = token[:at] + char + token[at + 1:]
        elif op == "delete":
            token = token[:at] + token[at + 1:]
        elif op == "insert":
            token = token[:at] + char + token[at:]
        elif op == "truncate":
            token = token[:at]
        elif op == "respell":  # the same bytes, another base64url spelling (if any)
            parts = token.split(".")
            index = draw(st.integers(0, len(parts) - 1))
            if parts[index] and parts[index][-1] in B64URL:
                value = B64URL.index(parts[index][-1]) ^ draw(st.integers(1, 15))
                parts[index] = parts[index][:-1] + B64URL[value]
            token = ".".join(parts)
        elif op == "swap":
            parts = token.split(".")
            token = ".".join(draw(st.permutations(parts)))
        else:
            token += char
    return token


def test_the_minted_tokens_are_accepted() -> None:
    assert all(accepted(token) for token in TOKENS)


@settings(max_examples=3000, deadline=None, derandomize=True)
@given(token=mutated())
def test_a_mutated_token_is_never_accepted_unless_unchanged(token: str) -> None:
    assert not accepted(token) or token in TOKENS


@settings(max_examples=1000, deadline=None, derandomize=True)
@given(text=st.text(max_size=400))
def test_arbitrary_text_is_refused_with_token_error_only(text: str) -> None:
    assert not accepted(text)
