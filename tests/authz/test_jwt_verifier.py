"""Properties of the strict JWS parser and the header checks."""

from __future__ import annotations

import contextlib
import json
from types import MappingProxyType

from hypothesis import given
from hypothesis import strategies as st

from authz_service.credentials import HeaderLocation, find_token
from authz_service.errors import CredentialError
from authz_service.jwt_verifier import TokenError, check_header, parse
from authz_service.keys import parse_jwks
from authz_service.models import RequestContext
from tests.authz import jwt_kit


@given(st.text(max_size=400))
def test_parse_raises_only_token_errors(text: str) -> None:
    with contextlib.suppress(TokenError):
        parse(text)


@given(st.lists(st.binary(max_size=60), min_size=3, max_size=3))
def test_parse_of_dotted_base64_raises_only_token_errors(parts: list[bytes]) -> None:
    with contextlib.suppress(TokenError):
        parse(".".join(jwt_kit.b64(p) for p in parts))


_HEADER_VALUES = st.one_of(
    st.none(), st.text(max_size=10), st.integers(), st.lists(st.text(max_size=3))
)


@given(st.dictionaries(st.sampled_from(["alg", "kid", "crit", "cty", "typ"]), _HEADER_VALUES))
def test_check_header_raises_only_token_errors(header: dict[str, object]) -> None:
    with contextlib.suppress(TokenError):
        check_header(header, frozenset({"RS256"}), "at+jwt")


@given(st.text(max_size=200))
def test_credential_parsing_raises_only_credential_errors(value: str) -> None:
    ctx = RequestContext("GET", "/", headers=MappingProxyType({"authorization": value}))
    try:
        token = find_token(ctx, [HeaderLocation("authorization", "Bearer ")], 8192)
    except CredentialError:
        return
    assert token is None or (token and "," not in token and not any(c.isspace() for c in token))


def test_token_type_comparison_follows_rfc7515() -> None:
    assert check_header({"alg": "RS256", "typ": "application/AT+JWT"}, frozenset({"RS256"}),
                        "at+jwt") == "RS256"


def test_jwks_without_kids_still_verifies_tokens_naming_a_kid() -> None:
    key = jwt_kit.rsa_key("k")
    jwk = key.public_jwk()
    del jwk["kid"]
    keys = parse_jwks(json.dumps({"keys": [jwk]}))
    assert keys.candidates("whatever", "RS256") == keys.keys


def test_unusable_jwks_entries_are_skipped_with_a_reason() -> None:
    good = jwt_kit.rsa_key("good").public_jwk()
    small = jwt_kit.rsa_key("small", bits=1024).public_jwk()
    private = {**good, "kid": "private", "d": "AAAA"}
    encryption = {**good, "kid": "enc", "use": "enc"}
    hmac = {"kty": "oct", "kid": "oct", "k": "c2VjcmV0"}
    wrong_alg = {**jwt_kit.ec_key("ec").public_jwk(), "alg": "RS256"}
    keys = parse_jwks(json.dumps({"keys": [good, small, private, encryption, hmac, wrong_alg]}))
    assert [k.kid for k in keys.keys] == ["good"]
    assert len(keys.skipped) == 5
    assert any("too small" in reason for reason in keys.skipped)
    assert any("private key material" in reason for reason in keys.skipped)
