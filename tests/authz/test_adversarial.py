"""Hostile tokens and headers, through real gRPC against the real authz-service.

Every case asserts the exact status and stable error code, and that the
credential is echoed nowhere in the answer. A canary HTTP server stands where a
token's jku/x5u would send the service: it must never be hit.
"""

from __future__ import annotations

import base64
import datetime
import json
import secrets
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from tests.authz import jwt_kit
from tests.authz.conftest import API_KEY, config_text
from tests.authz.grpc_kit import Answer, AuthzClient, authz_process, check_request
from tests.authz.http_kit import HttpServer, serve_http
from tests.support import wait_for

HMAC_SECRET = "s3cret-for-the-internal-issuer-0123456789"
REMOTE_ISSUER = "https://remote.issuer.test"


@dataclass
class Adversary:
    client: AuthzClient
    key: jwt_kit.SigningKey
    ec: jwt_kit.SigningKey
    canary: HttpServer
    idp: HttpServer
    initial_jwks_hits: int


@pytest.fixture(scope="module")
def adv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Adversary]:
    workdir: Path = tmp_path_factory.mktemp("adversarial")
    key = jwt_kit.rsa_key("rsa-1")
    ec = jwt_kit.ec_key("ec-1")
    remote = jwt_kit.rsa_key("remote-1")
    jwks_path = workdir / "jwks.json"
    jwks_path.write_text(json.dumps(jwt_kit.jwks(key, ec)))
    with serve_http() as canary, serve_http() as idp:
        idp.set_json("/jwks.json", jwt_kit.jwks(remote), cache_control="max-age=3600")
        extra_identities = f"""
  - name: internal
    jwt:
      issuer: internal
      algorithms: [HS256]
      shared_secret_env: ADV_HMAC_SECRET
  - name: remote
    jwt:
      issuer: {REMOTE_ISSUER}
      jwks_uri: {idp.base_url}/jwks.json
      refresh: {{unknown_kid_cooldown_seconds: 3600}}
  - name: cookie-idp
    jwt:
      issuer: {jwt_kit.ISSUER}
      audiences: [{jwt_kit.AUDIENCE}]
      jwks_file: {jwks_path}
      from:
        - {{header: authorization, prefix: "Bearer "}}
        - {{cookie: access_token}}
"""
        extra_routes = """
  - name: internal
    match: {path: {prefix: /internal/}}
    identities: [internal, idp]
  - name: remote
    match: {path: {prefix: /remote/}}
    identities: [remote]
  - name: cookie
    match: {path: {prefix: /cookie/}}
    identities: [cookie-idp]
"""
        config = workdir / "authz.yaml"
        config.write_text(config_text(jwks_path, extra_identities, extra_routes))
        env = {"ADV_HMAC_SECRET": HMAC_SECRET}
        with authz_process(config, workdir, env=env) as (_, client):
            wait_for(lambda: idp.hits_for("/jwks.json") >= 1, 10, "the initial JWKS fetch")
            yield Adversary(client, key, ec, canary, idp, idp.hits_for("/jwks.json"))


def ask(adv: Adversary, token: str, path: str = "/orders/1", method: str = "GET") -> Answer:
    answer = adv.client.check(
        check_request(method, path, {"authorization": f"Bearer {token}"})
    )
    assert_not_echoed(answer, token)
    return answer


def assert_not_echoed(answer: Answer, secret: str) -> None:
    text = answer.raw.SerializeToString()
    for piece in {secret, *secret.split(".")}:
        if len(piece) >= 8:
            assert piece.encode() not in text, "a credential was echoed in the answer"


def refused(
    answer: Answer, description: str, status: int = 401, code: str = "invalid_token"
) -> None:
    assert (answer.status, answer.body["error"]) == (status, code), answer.body
    assert answer.body["error_description"] == description


def resign(token: str, key: jwt_kit.SigningKey, **header: object) -> str:
    """Re-sign the claims of token with key and an arbitrary header."""
    claims = jwt.decode(token, options={"verify_signature": False})
    return jwt.encode(claims, key.private, algorithm=key.alg, headers=header)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def now() -> int:
    return int(time.time())


# -- algorithm confusion ---------------------------------------------------------


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
def test_alg_none_is_refused(adv: Adversary, alg: str) -> None:
    token = jwt_kit.raw_token({"alg": alg, "kid": "rsa-1"}, jwt_kit.claims())
    refused(ask(adv, token), "algorithm not allowed")


def test_alg_none_with_a_signature_is_refused(adv: Adversary) -> None:
    token = jwt_kit.raw_token({"alg": "none"}, jwt_kit.claims(), b"x" * 32)
    refused(ask(adv, token), "algorithm not allowed")


def _public_pem(key: jwt_kit.SigningKey) -> bytes:
    return key.private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _hs256(claims: dict[str, object], secret: bytes, kid: str = "rsa-1") -> str:
    header = b64(json.dumps({"alg": "HS256", "kid": kid, "typ": "JWT"}).encode())
    payload = b64(json.dumps(claims).encode())
    import hmac as hmac_module

    mac = hmac_module.new(secret, f"{header}.{payload}".encode(), "sha256").digest()
    return f"{header}.{payload}.{b64(mac)}"


def test_hs256_signed_with_the_rsa_public_key_is_refused(adv: Adversary) -> None:
    token = _hs256(jwt_kit.claims(), _public_pem(adv.key))
    refused(ask(adv, token), "algorithm not allowed")


def test_rsa_public_key_never_works_as_an_hmac_secret(adv: Adversary) -> None:
    # An HS256 issuer exists on this route; the RSA public key is not its secret.
    token = _hs256(jwt_kit.claims(iss="internal"), _public_pem(adv.key))
    refused(ask(adv, token, "/internal/x"), "signature verification failed")


def test_the_real_hmac_secret_is_accepted(adv: Adversary) -> None:
    token = _hs256(jwt_kit.claims(iss="internal", aud=None), HMAC_SECRET.encode(), kid="any")
    assert ask(adv, token, "/internal/x").allowed


def test_rs256_header_on_an_ec_key_is_refused(adv: Adversary) -> None:
    token = jwt_kit.mint(adv.key, headers={"kid": "ec-1"})
    refused(ask(adv, token), "no key accepts this algorithm")


# -- key id ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kid",
    ["../../../../etc/passwd", "' OR '1'='1' --", "$(touch /tmp/tollgate-pwned)", "rsa-1\x00"],
)
def test_hostile_kid_is_just_an_unknown_kid(adv: Adversary, kid: str) -> None:
    token = jwt_kit.mint(adv.key, headers={"kid": kid})
    refused(ask(adv, token), "unknown key id")
    assert not Path("/tmp/tollgate-pwned").exists()


def test_oversized_kid_is_refused(adv: Adversary) -> None:
    token = jwt_kit.mint(adv.key, headers={"kid": "k" * 2000})
    refused(ask(adv, token), "malformed key id")


# -- key-carrying headers never fetched or trusted ---------------------------------


def test_jku_x5u_jwk_x5c_are_never_used(adv: Adversary) -> None:
    attacker = jwt_kit.rsa_key("attacker")
    adv.canary.set_json("/jwks.json", jwt_kit.jwks(attacker))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "attacker")]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "attacker")]))
        .public_key(attacker.private.public_key())
        .serial_number(1)
        .not_valid_before(datetime.datetime(2020, 1, 1))
        .not_valid_after(datetime.datetime(2040, 1, 1))
        .sign(attacker.private, hashes.SHA256())
    )
    x5c = base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()
    headers: list[dict[str, object]] = [
        {"kid": "attacker", "jku": f"{adv.canary.base_url}/jwks.json"},
        {"kid": "attacker", "x5u": f"{adv.canary.base_url}/cert.pem"},
        {"kid": "attacker", "jwk": attacker.public_jwk()},
        {"kid": "attacker", "x5c": [x5c]},
        {"jku": f"{adv.canary.base_url}/jwks.json"},  # no kid: the configured keys only
        {"kid": "rsa-1", "jwk": attacker.public_jwk()},  # our kid, their key
    ]
    for header in headers:
        token = jwt.encode(jwt_kit.claims(), attacker.private, algorithm="RS256", headers=header)
        answer = ask(adv, token)
        assert (answer.status, answer.body["error"]) == (401, "invalid_token"), header
    assert adv.canary.total_hits() == 0


def test_crit_header_is_refused(adv: Adversary) -> None:
    token = jwt_kit.mint(adv.key, headers={"crit": ["exp"]})
    refused(ask(adv, token), "unsupported critical header")


# -- time ------------------------------------------------------------------------


def test_expired_beyond_skew(adv: Adversary) -> None:
    token = jwt_kit.mint(adv.key, iat=now() - 600, nbf=now() - 600, exp=now() - 40)
    refused(ask(adv, token), "token expired")


def test_expired_within_skew_is_accepted(adv: Adversary) -> None:
    token = jwt_kit.mint(adv.key, iat=now() - 600, nbf=now() - 600, exp=now() - 15)
    assert ask(adv, token).allowed


def test_not_yet_valid_beyond_skew(adv: Adversary) -> None:
    token = jwt_kit.mint(adv.key, nbf=now() + 60, exp=now() + 600)
    refused(ask(adv, token), "token not yet valid")


def test_not_yet_valid_within_skew_is_accepted(adv: Adversary) -> None:
    token = jwt_kit.mint(adv.key, nbf=now() + 10, exp=now() + 600)
    assert ask(adv, token).allowed


def test_missing_exp_is_refused(adv: Adversary) -> None:
    token = jwt_kit.mint(adv.key, exp=None)
    refused(ask(adv, token), "missing required claim 'exp'")


def signed(key: jwt_kit.SigningKey, header: dict[str, object], payload: str) -> str:
    """A correctly signed token whose payload text is exactly `payload`."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(payload.encode())}".encode()
    signature = jwt.get_algorithm_by_name(key.alg).sign(signing_input, key.private)
    return f"{signing_input.decode()}.{b64(signature)}"


@pytest.mark.parametrize("exp", ["9999999999", True, [9999999999], {"at": 9999999999}])
def test_exp_of_the_wrong_type_is_refused(adv: Adversary, exp: object) -> None:
    token = signed(adv.key, {"alg": "RS256", "kid": "rsa-1"}, json.dumps(jwt_kit.claims(exp=exp)))
    refused(ask(adv, token), "malformed 'exp' claim")


# -- issuer and audience ------------------------------------------------------------


def test_wrong_issuer(adv: Adversary) -> None:
    refused(ask(adv, jwt_kit.mint(adv.key, iss="https://evil.test")), "issuer not accepted")


def test_missing_issuer(adv: Adversary) -> None:
    refused(ask(adv, jwt_kit.mint(adv.key, iss=None)), "issuer not accepted")


def test_wrong_audience(adv: Adversary) -> None:
    refused(ask(adv, jwt_kit.mint(adv.key, aud="other-api")), "audience not accepted")


def test_missing_audience(adv: Adversary) -> None:
    refused(ask(adv, jwt_kit.mint(adv.key, aud=None)), "audience not accepted")


def test_audience_list_containing_ours_is_accepted(adv: Adversary) -> None:
    assert ask(adv, jwt_kit.mint(adv.key, aud=["other", jwt_kit.AUDIENCE])).allowed


# -- integrity ---------------------------------------------------------------------


def test_tampered_payload(adv: Adversary) -> None:
    header, _, signature = jwt_kit.mint(adv.key, scope="orders:read").split(".")
    forged = b64(json.dumps(jwt_kit.claims(scope="orders:read orders:write")).encode())
    refused(ask(adv, f"{header}.{forged}.{signature}", "/orders", "POST"),
            "signature verification failed")


def test_one_signature_bit_flipped(adv: Adversary) -> None:
    header, payload, signature = jwt_kit.mint(adv.key).split(".")
    raw = bytearray(base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)))
    raw[len(raw) // 2] ^= 0x01
    refused(ask(adv, f"{header}.{payload}.{b64(bytes(raw))}"), "signature verification failed")


def test_es256_with_r_and_s_zero(adv: Adversary) -> None:
    token = jwt_kit.raw_token({"alg": "ES256", "kid": "ec-1"}, jwt_kit.claims(), bytes(64))
    refused(ask(adv, token), "signature verification failed")


def test_signed_by_another_key_with_our_kid(adv: Adversary) -> None:
    impostor = jwt_kit.rsa_key("rsa-1")
    refused(ask(adv, jwt_kit.mint(impostor)), "signature verification failed")


# -- structure ---------------------------------------------------------------------


def test_nested_jwt_is_refused(adv: Adversary) -> None:
    token = jwt_kit.mint(adv.key, headers={"cty": "JWT"})
    refused(ask(adv, token), "nested tokens are not accepted")


def test_jwe_is_refused(adv: Adversary) -> None:
    token = ".".join(b64(secrets.token_bytes(16)) for _ in range(5))
    refused(ask(adv, token), "encrypted tokens (JWE) are not accepted")


def test_sixteen_kib_token_is_refused_unparsed(adv: Adversary) -> None:
    token = jwt_kit.mint(adv.key, padding="x" * 16384)
    refused(ask(adv, token), "credential too large")


def test_duplicate_json_members_are_refused(adv: Adversary) -> None:
    body = json.dumps(jwt_kit.claims(sub="alice"))[:-1] + ', "sub": "admin"}'
    token = signed(adv.key, {"alg": "RS256", "kid": "rsa-1"}, body)
    refused(ask(adv, token), "malformed token: duplicate member")


@pytest.mark.parametrize("mutate", ["padding", "standard-alphabet", "space"])
def test_non_base64url_segments_are_refused(adv: Adversary, mutate: str) -> None:
    header, payload, signature = jwt_kit.mint(adv.key).split(".")
    if mutate == "padding":
        payload += "=="
    elif mutate == "standard-alphabet":
        payload = payload[:-1] + "+"
    else:
        payload = payload[:5] + "%20" + payload[5:]
    refused(ask(adv, f"{header}.{payload}.{signature}"), "malformed token")


def test_header_that_is_not_json(adv: Adversary) -> None:
    refused(ask(adv, f"{b64(b'not json')}.{b64(b'{}')}.{b64(b'sig')}"), "malformed token")


def test_payload_that_is_a_json_array(adv: Adversary) -> None:
    token = f"{b64(json.dumps({'alg': 'RS256'}).encode())}.{b64(b'[1,2]')}.{b64(b'sig')}"
    refused(ask(adv, token), "malformed token")


def test_two_segment_token(adv: Adversary) -> None:
    header, payload, _ = jwt_kit.mint(adv.key).split(".")
    refused(ask(adv, f"{header}.{payload}"), "malformed token")


# -- key rotation storms -----------------------------------------------------------


def test_random_kid_storm_costs_at_most_one_fetch_per_cooldown(adv: Adversary) -> None:
    attacker = jwt_kit.rsa_key("x")

    def one(_: int) -> int:
        token = jwt.encode(
            jwt_kit.claims(iss=REMOTE_ISSUER, aud=None), attacker.private, algorithm="RS256",
            headers={"kid": secrets.token_hex(8)},
        )
        return ask(adv, token, "/remote/x").status

    with ThreadPoolExecutor(max_workers=16) as pool:
        statuses = list(pool.map(one, range(200)))
    assert statuses == [401] * 200
    assert adv.idp.hits_for("/jwks.json") - adv.initial_jwks_hits <= 1


# -- other credentials ---------------------------------------------------------------


def test_wrong_api_key(adv: Adversary) -> None:
    answer = adv.client.check(check_request(headers={"x-api-key": API_KEY[:-1] + "X"}))
    assert_not_echoed(answer, API_KEY)
    refused(answer, "unknown API key")


def test_api_key_with_embedded_newline(adv: Adversary) -> None:
    answer = adv.client.check(check_request(headers={"x-api-key": API_KEY + "\nx-admin: 1"}))
    assert_not_echoed(answer, API_KEY)
    refused(answer, "malformed credential", 400, "invalid_request")


def test_empty_api_key(adv: Adversary) -> None:
    answer = adv.client.check(check_request(headers={"x-api-key": ""}))
    refused(answer, "empty credential", 400, "invalid_request")


def test_token_in_header_and_cookie_is_400(adv: Adversary) -> None:
    token = jwt_kit.mint(adv.key)
    answer = adv.client.check(check_request(
        "GET", "/cookie/x",
        {"authorization": f"Bearer {token}", "cookie": f"theme=dark; access_token={token}"},
    ))
    assert_not_echoed(answer, token)
    refused(answer, "credentials sent by more than one method", 400, "invalid_request")


def test_token_from_the_cookie_alone_is_accepted(adv: Adversary) -> None:
    token = jwt_kit.mint(adv.key)
    answer = adv.client.check(
        check_request("GET", "/cookie/x", {"cookie": f"access_token={token}"})
    )
    assert answer.allowed


# -- mTLS and forged identity headers -----------------------------------------------


def test_xfcc_from_the_client_without_mtls_grants_nothing(adv: Adversary) -> None:
    xfcc = "Hash=abc;URI=spiffe://tollgate.test/ns/prod/sa/admin"
    answer = adv.client.check(
        check_request("GET", "/admin/x", {"x-forwarded-client-cert": xfcc})
    )
    assert (answer.status, answer.body["error"]) == (401, "missing_credentials")


@pytest.mark.parametrize(
    ("principal", "description"),
    [
        ("spiffe://tollgate.test/ns/prod/sa/intruder", "peer not allowed"),
        ("spiffe://evil.test/ns/prod/sa/admin", "peer trust domain not accepted"),
        ("CN=admin,O=tollgate", "peer identity is not a SPIFFE ID"),
    ],
)
def test_unaccepted_peers_are_403(adv: Adversary, principal: str, description: str) -> None:
    answer = adv.client.check(check_request("GET", "/admin/x", principal=principal))
    refused(answer, description, 403, "peer_not_allowed")


def test_forged_identity_header_is_removed(adv: Adversary) -> None:
    answer = adv.client.check(check_request("GET", "/healthz", {"x-tollgate-subject": "root"}))
    assert answer.allowed
    assert "x-tollgate-subject" in answer.removed


# -- scopes ------------------------------------------------------------------------


@pytest.mark.parametrize("scope", ["orders:writeX", "orders:wri", "ORDERS:WRITE", "orders:read"])
def test_near_miss_scopes_are_403(adv: Adversary, scope: str) -> None:
    answer = ask(adv, jwt_kit.mint(adv.key, scope=scope), "/orders", "POST")
    assert (answer.status, answer.body["error"]) == (403, "insufficient_scope")
