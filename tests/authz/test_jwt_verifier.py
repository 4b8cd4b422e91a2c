"""Strict JWS parsing, header rules, signatures and claims: pure, clock injected."""

from __future__ import annotations

import contextlib
import json
import string
from types import MappingProxyType
from typing import Any

import jwt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from authz_service.identity.credentials import CookieLocation, HeaderLocation, Location, find_token
from authz_service.identity.errors import CredentialError
from authz_service.identity.jwt_verifier import (
    ClaimRules,
    TokenError,
    UnknownKeyId,
    check_claims,
    check_header,
    parse,
    verify_signature,
)
from authz_service.keys.keyset import KeySetError, key_set, parse_jwks
from authz_service.models import RequestContext
from tests.kits import jwt_kit

NOW = 1_700_000_000.0
RSA = jwt_kit.rsa_key("rsa-1")
EC = jwt_kit.ec_key("ec-1")
KEYS = parse_jwks(json.dumps(jwt_kit.jwks(RSA, EC)))
ALLOWED = frozenset({"RS256", "ES256"})
RULES = ClaimRules(
    issuer=jwt_kit.ISSUER,
    audiences=frozenset({jwt_kit.AUDIENCE}),
    required=frozenset({"exp"}),
    skew=30.0,
    max_lifetime=None,
)


def claims(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "iss": jwt_kit.ISSUER,
        "aud": jwt_kit.AUDIENCE,
        "sub": "u",
        "iat": NOW,
        "nbf": NOW,
        "exp": NOW + 600,
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


# --- parse -------------------------------------------------------------------------


def test_parse_valid_token() -> None:
    token = jwt_kit.mint(RSA)
    parsed = parse(token)
    assert parsed.header["kid"] == "rsa-1"
    assert parsed.signing_input == token.rsplit(".", 1)[0].encode()


@pytest.mark.parametrize(
    ("token", "message"),
    [
        ("a.b.c.d.e", "encrypted tokens (JWE) are not accepted"),
        ("a.b", "malformed token"),
        (".e30.", "malformed token"),
        ("e30..", "malformed token"),
        ("e30.e30.=", "malformed token"),
        ("e30.e30.a+b", "malformed token"),
        ("e30.W10.", "malformed token"),  # payload []
        ("W10.e30.", "malformed token"),  # header []
        ("e30.e30.é", "malformed token"),
        ("e30.e30.a", "malformed token"),  # 1 char: not valid base64 length
        (jwt_kit.b64(b"\xff\xfe") + ".e30.", "malformed token"),
        (jwt_kit.b64(b'{"a":1,"a":2}') + ".e30.", "malformed token: duplicate member"),
        ("e30." + jwt_kit.b64(b'{"exp":NaN}') + ".", "malformed token"),
        ("e30." + jwt_kit.b64(b"[" * 100_000) + ".", "malformed token"),
    ],
)
def test_parse_refuses(token: str, message: str) -> None:
    with pytest.raises(TokenError) as info:
        parse(token)
    assert str(info.value) == message


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.text())
def test_parse_arbitrary_text_raises_only_token_error(text: str) -> None:
    with contextlib.suppress(TokenError):
        parse(text)


_B64_ALPHABET = string.ascii_letters + string.digits + "-_=+/."


@settings(max_examples=300)
@given(st.lists(st.text(alphabet=_B64_ALPHABET, max_size=40), min_size=1, max_size=6))
def test_parse_arbitrary_segments_raises_only_token_error(segments: list[str]) -> None:
    with contextlib.suppress(TokenError):
        parse(".".join(segments))


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=10,
)


@settings(max_examples=150)
@given(_JSON, _JSON)
def test_verifier_on_arbitrary_json_raises_only_token_error(header: Any, payload: Any) -> None:
    token = jwt_kit.b64(json.dumps(header).encode()) + "." + jwt_kit.b64(
        json.dumps(payload).encode()
    ) + "." + jwt_kit.b64(b"sig")
    try:
        parsed = parse(token)
        alg = check_header(parsed.header, ALLOWED, None)
        verify_signature(parsed, alg, KEYS)
    except TokenError:
        return
    raise AssertionError("an arbitrary signature verified")


@settings(max_examples=150)
@given(st.dictionaries(st.sampled_from(["exp", "nbf", "iat", "iss", "aud"]), _JSON))
def test_check_claims_on_arbitrary_values_raises_only_token_error(
    values: dict[str, Any],
) -> None:
    try:
        until = check_claims({**claims(), **values}, RULES, NOW)
    except TokenError:
        return
    assert until < float("inf")


# --- header ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ({"alg": "none"}, "algorithm not allowed"),
        ({"alg": "NoNe"}, "algorithm not allowed"),
        ({}, "algorithm not allowed"),
        ({"alg": None}, "algorithm not allowed"),
        ({"alg": ["RS256"]}, "algorithm not allowed"),
        ({"alg": "HS256"}, "algorithm not allowed"),
        ({"alg": "rs256"}, "algorithm not allowed"),
        ({"alg": "RS256 "}, "algorithm not allowed"),
        ({"alg": "RS256", "crit": ["b64"]}, "unsupported critical header"),
        ({"alg": "RS256", "crit": None}, "unsupported critical header"),
        ({"alg": "RS256", "cty": "JWT"}, "nested tokens are not accepted"),
        ({"alg": "RS256", "cty": "jwt"}, "nested tokens are not accepted"),
        ({"alg": "RS256", "kid": 1}, "malformed key id"),
        ({"alg": "RS256", "kid": "k" * 257}, "malformed key id"),
    ],
)
def test_check_header_refuses(header: dict[str, Any], message: str) -> None:
    with pytest.raises(TokenError) as info:
        check_header(header, ALLOWED, None)
    assert str(info.value) == message


def test_check_header_kid_of_256_is_fine() -> None:
    assert check_header({"alg": "RS256", "kid": "k" * 256}, ALLOWED, None) == "RS256"


@pytest.mark.parametrize(
    ("typ", "ok"),
    [
        ("at+jwt", True),
        ("AT+JWT", True),
        ("application/at+jwt", True),
        ("JWT", False),
        (None, False),
    ],
)
def test_token_type(typ: str | None, ok: bool) -> None:
    header: dict[str, Any] = {"alg": "RS256", **({"typ": typ} if typ else {})}
    if ok:
        assert check_header(header, ALLOWED, "at+jwt") == "RS256"
    else:
        with pytest.raises(TokenError, match="wrong token type"):
            check_header(header, ALLOWED, "at+jwt")


# --- signatures --------------------------------------------------------------------------


def test_signature_verifies() -> None:
    parsed = parse(jwt_kit.mint(RSA))
    verify_signature(parsed, "RS256", KEYS)


def test_unknown_kid() -> None:
    parsed = parse(jwt_kit.mint(jwt_kit.rsa_key("nope")))
    with pytest.raises(UnknownKeyId) as info:
        verify_signature(parsed, "RS256", KEYS)
    assert info.value.kid == "nope"


def test_empty_key_set_is_unknown_kid_even_without_kid() -> None:
    parsed = parse(jwt_kit.raw_token({"alg": "RS256"}, claims(), b"x"))
    with pytest.raises(UnknownKeyId):
        verify_signature(parsed, "RS256", key_set([]))


def test_kid_of_the_wrong_key_type() -> None:
    parsed = parse(jwt_kit.raw_token({"alg": "ES256", "kid": "rsa-1"}, claims(), b"\0" * 64))
    with pytest.raises(TokenError, match="no key accepts this algorithm"):
        verify_signature(parsed, "ES256", KEYS)


def test_no_kid_tries_every_fitting_key() -> None:
    keys = parse_jwks(json.dumps(jwt_kit.jwks(jwt_kit.ec_key("ec-0"), EC)))
    parsed = parse(jwt.encode(claims(), EC.private, algorithm="ES256"))
    assert "kid" not in parsed.header
    verify_signature(parsed, "ES256", keys)
    forged = parse(jwt_kit.raw_token({"alg": "ES256"}, claims(), b"\1" * 64))
    with pytest.raises(TokenError, match="signature verification failed"):
        verify_signature(forged, "ES256", keys)


@pytest.mark.parametrize("signature", [b"\0" * 64, b"\0" * 63, b"\0" * 65, b"\xff" * 64])
def test_es256_degenerate_signatures(signature: bytes) -> None:
    parsed = parse(jwt_kit.raw_token({"alg": "ES256", "kid": "ec-1"}, claims(), signature))
    with pytest.raises(TokenError, match="signature verification failed"):
        verify_signature(parsed, "ES256", KEYS)


def test_bit_flip_in_signature() -> None:
    head, body, sig = jwt_kit.mint(RSA).split(".")
    flipped = sig[:-2] + ("A" if sig[-2] != "A" else "B") + sig[-1]
    with pytest.raises(TokenError, match="signature verification failed"):
        verify_signature(parse(f"{head}.{body}.{flipped}"), "RS256", KEYS)


# --- claims ------------------------------------------------------------------------------


def test_claims_valid_until_is_exp_plus_skew() -> None:
    assert check_claims(claims(), RULES, NOW) == NOW + 600 + 30


@pytest.mark.parametrize(
    ("now", "ok"),
    [(NOW + 600 + 30, False), (NOW + 600 + 29.999, True), (NOW + 600 + 30.001, False)],
)
def test_exp_edge(now: float, ok: bool) -> None:
    if ok:
        check_claims(claims(), RULES, now)
    else:
        with pytest.raises(TokenError, match="token expired"):
            check_claims(claims(), RULES, now)


@pytest.mark.parametrize(("now", "ok"), [(NOW - 30, True), (NOW - 30.001, False)])
def test_nbf_edge(now: float, ok: bool) -> None:
    c = claims(nbf=NOW, iat=NOW - 100)
    if ok:
        check_claims(c, RULES, now)
    else:
        with pytest.raises(TokenError, match="token not yet valid"):
            check_claims(c, RULES, now)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"exp": None}, "missing required claim 'exp'"),
        ({"iss": "https://issuer.test/"}, "wrong issuer"),
        ({"aud": None}, "audience not accepted"),
        ({"aud": ["x", "y"]}, "audience not accepted"),
        ({"aud": [["orders-api"]]}, "audience not accepted"),
        ({"aud": {"orders-api": 1}}, "audience not accepted"),
        ({"exp": "1"}, "malformed 'exp' claim"),
        ({"exp": True}, "malformed 'exp' claim"),
        ({"exp": float("inf")}, "malformed 'exp' claim"),
        ({"exp": float("nan")}, "malformed 'exp' claim"),
        ({"exp": 10**400}, "malformed 'exp' claim"),
        ({"nbf": False}, "malformed 'nbf' claim"),
        ({"iat": "now"}, "malformed 'iat' claim"),
        ({"iat": NOW + 31}, "token issued in the future"),
    ],
)
def test_claims_refused(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(TokenError) as info:
        check_claims(claims(**overrides), RULES, NOW)
    assert str(info.value) == message


def test_exp_null_is_malformed_not_forever() -> None:
    c = {**claims(), "exp": None}
    with pytest.raises(TokenError, match="malformed 'exp' claim"):
        check_claims(c, RULES, NOW)


def test_audience_list_with_ours() -> None:
    check_claims(claims(aud=["x", jwt_kit.AUDIENCE]), RULES, NOW)


def test_max_lifetime() -> None:
    rules = ClaimRules(jwt_kit.ISSUER, frozenset(), frozenset(), 0, 3600)
    check_claims(claims(exp=NOW + 3600), rules, NOW)
    with pytest.raises(TokenError, match="token lifetime too long"):
        check_claims(claims(exp=NOW + 3601), rules, NOW)
    with pytest.raises(TokenError, match="token lifetime too long"):
        check_claims(claims(iat=None, nbf=None), rules, NOW)


# --- credentials parsing (Hypothesis) ----------------------------------------------------

_LOCATIONS: list[Location] = [HeaderLocation("authorization", "Bearer "), CookieLocation("session")]
_HEADER_TEXT = st.text(
    alphabet=st.sampled_from(list("Bearer bearer ;=,\"\t\n\r abc.xyz-_é")), max_size=60
)


@settings(max_examples=500)
@given(
    st.one_of(st.none(), _HEADER_TEXT),
    st.one_of(st.none(), _HEADER_TEXT),
    st.booleans(),
)
def test_find_token_raises_only_credential_errors(
    authorization: str | None, cookie: str | None, duplicated: bool
) -> None:
    headers = {
        k: v for k, v in {"authorization": authorization, "cookie": cookie}.items() if v is not None
    }
    ctx = RequestContext(
        method="GET",
        path="/",
        headers=MappingProxyType(headers),
        duplicate_headers=frozenset({"authorization"} if duplicated else ()),
    )
    try:
        token = find_token(ctx, _LOCATIONS, 40)
    except CredentialError as exc:
        assert exc.description  # a reason the client may read
        return
    if token is not None:
        assert token
        assert len(token) <= 40
        assert "," not in token or cookie is not None
        assert token in (authorization or "") or token in (cookie or "")


# --- JWKS parsing: keys bound to what they may verify ---------------------------------


def _jwk(key: jwt_kit.SigningKey, **changes: Any) -> dict[str, Any]:
    jwk = key.public_jwk()
    jwk.update(changes)
    return {k: v for k, v in jwk.items() if v is not None}


@pytest.mark.parametrize(
    ("jwk", "reason"),
    [
        ({"kty": "oct", "k": jwt_kit.b64(b"s" * 32), "kid": "hs"}, "unsupported kty 'oct'"),
        (_jwk(RSA, use="enc"), "use='enc' is not 'sig'"),
        (_jwk(RSA, alg="HS256"), "alg 'HS256' does not fit a RSA key"),
        (_jwk(EC, alg="RS256"), "alg 'RS256' does not fit a EC key"),
        (_jwk(RSA, kid=7), "kid is not a string"),
        (_jwk(RSA, d="AQAB"), "private key material in a public JWKS"),
        (_jwk(jwt_kit.rsa_key("small", bits=1024)), "RSA key of 1024 bits is too small"),
        (_jwk(EC, crv="secp256k1"), "unsupported EC curve 'secp256k1'"),
        ("not an object", "not an object"),
    ],
)
def test_jwks_refuses_keys_that_could_confuse(jwk: Any, reason: str) -> None:
    keys = parse_jwks(json.dumps({"keys": [jwk]}))
    assert keys.keys == ()
    assert len(keys.skipped) == 1
    assert keys.skipped[0].endswith(reason)


def test_jwks_key_algorithms_are_bound_to_key_type() -> None:
    keys = parse_jwks(json.dumps({"keys": [_jwk(RSA, alg=None), _jwk(EC)]}))
    by_kid = {k.kid: k.algorithms for k in keys.keys}
    assert by_kid["rsa-1"] == frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
    assert by_kid["ec-1"] == frozenset({"ES256"})
    assert keys.candidates("rsa-1", "HS256") == ()
    assert keys.candidates("ec-1", "RS256") == ()


@pytest.mark.parametrize("document", ["", "[]", '{"keys": {}}', "{", '{"keys": null}'])
def test_jwks_document_unusable(document: str) -> None:
    with pytest.raises(KeySetError):
        parse_jwks(document)
