"""Adversarial tokens, keys and peers through real gRPC against authz-service.

Every case asserts the exact status and stable error code, and that the
credential the client sent is echoed nowhere in the answer. Header parameters
that point at keys (jku, x5u, jwk, x5c) aim at a canary HTTP server that must
never be contacted.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from tests.kits import jwt_kit
from tests.kits.authz_stack import API_KEY, config_text
from tests.kits.grpc_kit import Answer, AuthzClient, authz_process, check_request
from tests.kits.http_kit import HttpServer, serve_http
from tests.kits.processes import wait_for

pytestmark = pytest.mark.integration  # every test here starts the service

HS_ISSUER = "https://hs.test"
HS_SECRET = "s3cret-shared-by-tollgate-and-hs-idp-0123456789"
REMOTE_ISSUER = "https://remote.test"
SKEW = 30

EXTRA_IDENTITIES = f"""
  - name: hs
    jwt:
      issuer: {HS_ISSUER}
      audiences: [{jwt_kit.AUDIENCE}]
      algorithms: [HS256]
      shared_secret_env: TG_TEST_HS_SECRET
  - name: remote
    jwt:
      issuer: {REMOTE_ISSUER}
      audiences: [{jwt_kit.AUDIENCE}]
      jwks_uri: JWKS_URL
      algorithms: [RS256]
      refresh: {{unknown_kid_cooldown_seconds: 3600, default_ttl_seconds: 3600,
                 min_ttl_seconds: 3600}}
  - name: web
    jwt:
      issuer: {jwt_kit.ISSUER}
      audiences: [{jwt_kit.AUDIENCE}]
      jwks_file: JWKS_FILE
      algorithms: [RS256]
      from: [{{header: authorization}}, {{cookie: session}}]
"""

EXTRA_ROUTES = """
  - name: public
    match: {path: {prefix: /public/}}
    anonymous: true
  - name: hs
    match: {path: {exact: /hs}}
    identities: [hs]
  - name: remote
    match: {path: {exact: /remote}}
    identities: [remote]
  - name: web
    match: {path: {exact: /web}}
    identities: [web]
"""


@dataclass
class Adv:
    client: AuthzClient
    keys: dict[str, jwt_kit.SigningKey]
    remote_key: jwt_kit.SigningKey
    jwks_server: HttpServer
    canary: HttpServer

    @property
    def rsa(self) -> jwt_kit.SigningKey:
        return self.keys["RS256"]


@pytest.fixture(scope="module")
def adv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Adv]:
    workdir = tmp_path_factory.mktemp("authz-adv")
    keys = {"RS256": jwt_kit.rsa_key("rsa-1"), "ES256": jwt_kit.ec_key("ec-1")}
    remote_key = jwt_kit.rsa_key("remote-1")
    jwks_path = workdir / "jwks.json"
    jwks_path.write_text(json.dumps(jwt_kit.jwks(*keys.values())))
    with serve_http() as jwks_server, serve_http() as canary:
        jwks_server.set_json("/jwks.json", jwt_kit.jwks(remote_key))
        extra = EXTRA_IDENTITIES.replace("JWKS_URL", f"{jwks_server.base_url}/jwks.json")
        extra = extra.replace("JWKS_FILE", str(jwks_path))
        config = workdir / "authz.yaml"
        config.write_text(config_text(jwks_path, extra, EXTRA_ROUTES))
        env = {"TG_TEST_HS_SECRET": HS_SECRET}
        with authz_process(config, workdir, env) as (_, client):
            adv = Adv(client, keys, remote_key, jwks_server, canary)
            # The remote issuer's first fetch happens in the background.
            wait_for(
                lambda: check(adv, remote_token(adv)).allowed,
                timeout=10,
                what="remote JWKS fetched",
            )
            yield adv
        assert canary.total_hits() == 0


def remote_token(adv: Adv, **headers: Any) -> str:
    return jwt_kit.mint(adv.remote_key, headers or None, iss=REMOTE_ISSUER)


def check(
    adv: Adv,
    credential: str,
    path: str = "/remote",
    method: str = "GET",
    *,
    header: str = "authorization",
    prefix: str = "Bearer ",
    extra: dict[str, str] | None = None,
) -> Answer:
    headers = {header: prefix + credential, **(extra or {})}
    answer = adv.client.check(check_request(method, path, headers))
    assert_not_echoed(answer, credential)
    return answer


def assert_not_echoed(answer: Answer, credential: str) -> None:
    secret = credential.strip()
    if len(secret) < 8:
        return
    if not answer.allowed:
        assert secret not in answer.raw.denied_response.body
    for option in (*answer.raw.denied_response.headers, *answer.raw.ok_response.headers):
        assert secret not in option.header.value
        assert secret not in option.header.key
    for value in answer.raw.dynamic_metadata.values():
        assert secret not in str(value)
    # Signatures identify tokens too; no part of one may leak.
    for part in secret.split(".")[1:]:
        if len(part) >= 16 and not answer.allowed:
            assert part not in answer.raw.denied_response.body


def assert_invalid_token(answer: Answer, description: str) -> None:
    assert answer.status == 401
    assert answer.body["error"] == "invalid_token"
    assert answer.body["error_description"] == description
    assert answer.header("www-authenticate") == (
        f'Bearer realm="tollgate", error="invalid_token", error_description="{description}"'
    )


def sign(key: jwt_kit.SigningKey, header: dict[str, Any], payload: bytes) -> str:
    """A correctly signed compact JWS over an arbitrary payload byte string."""
    signing_input = jwt_kit.b64(json.dumps(header).encode()) + "." + jwt_kit.b64(payload)
    algorithm: Any
    if header["alg"] == "ES256":
        algorithm = ECAlgorithm(ECAlgorithm.SHA256)
    else:
        algorithm = RSAAlgorithm(RSAAlgorithm.SHA256)
    signature = algorithm.sign(signing_input.encode(), key.private)
    return signing_input + "." + jwt_kit.b64(signature)


def idp_claims(**overrides: Any) -> dict[str, Any]:
    return jwt_kit.claims(**overrides)


def idp(adv: Adv, token: str, path: str = "/orders/1", method: str = "GET") -> Answer:
    return check(adv, token, path, method)


# --- algorithm confusion -------------------------------------------------------


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
def test_alg_none_is_refused(adv: Adv, alg: str) -> None:
    token = jwt_kit.raw_token({"alg": alg, "kid": "rsa-1"}, idp_claims())
    assert_invalid_token(idp(adv, token), "algorithm not allowed")


def test_alg_none_with_a_signature_is_refused(adv: Adv) -> None:
    token = jwt_kit.raw_token({"alg": "none"}, idp_claims(), b"x" * 32)
    assert_invalid_token(idp(adv, token), "algorithm not allowed")


def _rsa_public_pem(key: jwt_kit.SigningKey) -> bytes:
    return key.private.public_key().public_bytes(  # type: ignore[no-any-return]
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _hs256(secret: bytes, header: dict[str, Any], payload: dict[str, Any]) -> str:
    unsigned = jwt_kit.raw_token(header, payload).rsplit(".", 1)[0]
    mac = hmac.new(secret, unsigned.encode(), hashlib.sha256).digest()
    return unsigned + "." + jwt_kit.b64(mac)


def test_hs256_with_rsa_public_key_as_secret_on_rs256_issuer(adv: Adv) -> None:
    token = _hs256(_rsa_public_pem(adv.rsa), {"alg": "HS256", "kid": "rsa-1"}, idp_claims())
    assert_invalid_token(idp(adv, token), "algorithm not allowed")


@pytest.mark.parametrize("kid", [None, "rsa-1"])
def test_rsa_public_key_never_works_as_hmac_secret_on_hs_issuer(
    adv: Adv, kid: str | None
) -> None:
    header: dict[str, Any] = {"alg": "HS256", **({"kid": kid} if kid else {})}
    claims = idp_claims(iss=HS_ISSUER)
    token = _hs256(_rsa_public_pem(adv.rsa), header, claims)
    # The HS issuer's one secret has no kid, so it is tried whatever kid the token
    # names: the RSA public key as a secret fails the HMAC, with or without a kid.
    assert_invalid_token(check(adv, token, "/hs"), "signature verification failed")
    # The issuer's own secret does work: the refusal above is about the key.
    assert check(adv, _hs256(HS_SECRET.encode(), header, claims), "/hs").allowed


def test_rs256_token_on_hs_issuer_is_refused(adv: Adv) -> None:
    token = jwt_kit.mint(adv.rsa, iss=HS_ISSUER)
    assert_invalid_token(check(adv, token, "/hs"), "algorithm not allowed")


def test_algorithm_not_bound_to_key_type_es256_header_rsa_kid(adv: Adv) -> None:
    token = jwt_kit.raw_token({"alg": "ES256", "kid": "rsa-1"}, idp_claims(), b"\0" * 64)
    assert_invalid_token(idp(adv, token), "no key accepts this algorithm")


# --- kid -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "kid",
    [
        "../../etc/passwd",
        "/dev/zero",
        "' OR '1'='1",
        "rsa-1'; DROP TABLE keys;--",
        "$(curl http://127.0.0.1:1/x)",
        "`id`",
        "rsa-1\u0000",
        "rsa-1 ",
        "",
    ],
)
def test_hostile_kid_is_an_unknown_key(adv: Adv, kid: str) -> None:
    token = jwt_kit.mint(adv.rsa, {"kid": kid})
    assert_invalid_token(idp(adv, token), "unknown key id")


def test_very_long_kid_is_malformed(adv: Adv) -> None:
    token = jwt_kit.mint(adv.rsa, {"kid": "k" * 2000})
    assert_invalid_token(idp(adv, token), "malformed key id")


@pytest.mark.parametrize("kid", [123, ["rsa-1"], {"a": 1}, True])
def test_non_string_kid_is_malformed(adv: Adv, kid: Any) -> None:
    token = jwt_kit.raw_token({"alg": "RS256", "kid": kid}, idp_claims(), b"\1" * 256)
    assert_invalid_token(idp(adv, token), "malformed key id")


def test_key_of_one_issuer_does_not_sign_for_another(adv: Adv) -> None:
    # Signed by the remote issuer's real key, claiming to come from the idp issuer.
    token = jwt_kit.mint(adv.remote_key)
    assert_invalid_token(idp(adv, token), "unknown key id")
    # ...and the idp's key claiming the remote issuer, under a kid the remote lacks.
    assert_invalid_token(check(adv, jwt_kit.mint(adv.rsa, iss=REMOTE_ISSUER)), "unknown key id")
    # ...or under the remote's kid.
    forged = jwt_kit.mint(adv.rsa, {"kid": "remote-1"}, iss=REMOTE_ISSUER)
    assert_invalid_token(check(adv, forged), "signature verification failed")


# --- key-pointing header parameters -------------------------------------------


def _attacker_headers(adv: Adv, attacker: jwt_kit.SigningKey) -> list[dict[str, Any]]:
    url = adv.canary.base_url
    adv.canary.set_json("/jwks.json", jwt_kit.jwks(attacker))
    cert = base64.b64encode(b"0\x82\x01\x0a" + secrets.token_bytes(64)).decode()
    return [
        {"jku": f"{url}/jwks.json"},
        {"x5u": f"{url}/cert.pem"},
        {"jwk": attacker.public_jwk()},
        {"x5c": [cert]},
        {"jku": f"{url}/jwks.json", "x5u": f"{url}/x", "jwk": attacker.public_jwk()},
    ]


@pytest.mark.parametrize("case", range(5))
@pytest.mark.parametrize("kid", ["attacker-1", "rsa-1", None])
def test_key_pointing_headers_are_never_used(adv: Adv, case: int, kid: str | None) -> None:
    attacker = jwt_kit.rsa_key(kid or "unused")
    header = _attacker_headers(adv, attacker)[case]
    before = adv.canary.total_hits()
    token = jwt_kit.mint(attacker, header)
    if kid is None:
        parts = token.split(".")
        hdr = json.loads(base64.urlsafe_b64decode(parts[0] + "=="))
        del hdr["kid"]
        token = sign(attacker, hdr, json.dumps(idp_claims()).encode())
    answer = idp(adv, token)
    expected = "unknown key id" if kid == "attacker-1" else "signature verification failed"
    assert_invalid_token(answer, expected)
    # The remote issuer may refetch for unknown kids: its fetches go to its own URL only.
    assert adv.canary.total_hits() == before == 0


def test_key_pointing_headers_on_remote_issuer_never_reach_canary(adv: Adv) -> None:
    attacker = jwt_kit.rsa_key("attacker-remote")
    for header in _attacker_headers(adv, attacker):
        token = jwt_kit.mint(attacker, header, iss=REMOTE_ISSUER)
        assert_invalid_token(check(adv, token), "unknown key id")
    assert adv.canary.total_hits() == 0


# --- header rules ---------------------------------------------------------------


def test_crit_header_is_refused(adv: Adv) -> None:
    token = jwt_kit.mint(adv.rsa, {"crit": ["exp"]})
    assert_invalid_token(idp(adv, token), "unsupported critical header")


def test_crit_empty_list_is_refused(adv: Adv) -> None:
    token = jwt_kit.mint(adv.rsa, {"crit": []})
    assert_invalid_token(idp(adv, token), "unsupported critical header")


@pytest.mark.parametrize("cty", ["JWT", "jwt", "application/JWT"])
def test_nested_jwt_is_refused(adv: Adv, cty: str) -> None:
    inner = jwt_kit.mint(adv.rsa)
    if cty == "application/JWT":
        # Only the bare "JWT" form is the nested-token marker (RFC 7519 §5.2);
        # the payload is a token string, not a claims object: malformed.
        token = sign(adv.rsa, {"alg": "RS256", "kid": "rsa-1", "cty": cty}, inner.encode())
        assert_invalid_token(idp(adv, token), "malformed token")
        return
    token = jwt_kit.mint(adv.rsa, {"cty": cty})
    assert_invalid_token(idp(adv, token), "nested tokens are not accepted")


def test_jwe_five_segments_is_refused(adv: Adv) -> None:
    header = jwt_kit.b64(json.dumps({"alg": "RSA-OAEP", "enc": "A256GCM"}).encode())
    token = ".".join([header, jwt_kit.b64(b"k" * 32), jwt_kit.b64(b"i" * 12), "Y2lw", "dGFn"])
    assert_invalid_token(idp(adv, token), "encrypted tokens (JWE) are not accepted")


def test_non_json_header_is_malformed(adv: Adv) -> None:
    good = jwt_kit.mint(adv.rsa).split(".")
    token = ".".join([jwt_kit.b64(b"not json{"), good[1], good[2]])
    assert_invalid_token(idp(adv, token), "malformed token")


def test_payload_json_array_is_malformed(adv: Adv) -> None:
    token = sign(adv.rsa, {"alg": "RS256", "kid": "rsa-1"}, b'[{"sub": "a"}]')
    assert_invalid_token(idp(adv, token), "malformed token")


def test_duplicate_json_members_are_refused(adv: Adv) -> None:
    claims = json.dumps(idp_claims(sub="a"))[:-1] + ', "sub": "admin"}'
    token = sign(adv.rsa, {"alg": "RS256", "kid": "rsa-1"}, claims.encode())
    assert_invalid_token(idp(adv, token), "malformed token: duplicate member")


def test_duplicate_header_members_are_refused(adv: Adv) -> None:
    claims = json.dumps(idp_claims()).encode()
    unsigned = (
        jwt_kit.b64(b'{"alg":"RS256","kid":"rsa-1","alg":"none"}') + "." + jwt_kit.b64(claims)
    )
    signature = RSAAlgorithm(RSAAlgorithm.SHA256).sign(unsigned.encode(), adv.rsa.private)
    token = unsigned + "." + jwt_kit.b64(signature)
    assert_invalid_token(idp(adv, token), "malformed token: duplicate member")


@pytest.mark.parametrize("mutation", ["pad-header", "pad-sig", "plus", "slash", "space"])
def test_non_canonical_base64_is_malformed(adv: Adv, mutation: str) -> None:
    head, body, sig = jwt_kit.mint(adv.rsa).split(".")
    if mutation == "pad-header":
        head += "=="
    elif mutation == "pad-sig":
        sig += "="
    elif mutation == "plus":
        sig = sig.replace("-", "+").replace("_", "+") if ("-" in sig or "_" in sig) else "+" + sig
    elif mutation == "slash":
        body = "/" + body
    else:
        body = body[:5] + "%20" + body[5:]
    answer = idp(adv, f"{head}.{body}.{sig}")
    assert_invalid_token(answer, "malformed token")


@pytest.mark.parametrize("segments", ["a.b", "a.b.c.d", "..", "a..c", ".b.c", "a.b.c.d.e.f"])
def test_wrong_segment_count_is_malformed(adv: Adv, segments: str) -> None:
    answer = idp(adv, segments)
    assert_invalid_token(answer, "malformed token")


# --- signatures -----------------------------------------------------------------


def test_payload_tampered_after_signing(adv: Adv) -> None:
    head, _, sig = jwt_kit.mint(adv.rsa, sub="alice").split(".")
    forged = jwt_kit.b64(json.dumps(idp_claims(sub="admin", scope="orders:write")).encode())
    assert_invalid_token(idp(adv, f"{head}.{forged}.{sig}"), "signature verification failed")


@pytest.mark.parametrize("alg", ["RS256", "ES256"])
def test_one_signature_bit_flipped(adv: Adv, alg: str) -> None:
    head, body, sig = jwt_kit.mint(adv.keys[alg]).split(".")
    raw = bytearray(base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4)))
    raw[len(raw) // 2] ^= 0x01
    token = f"{head}.{body}.{jwt_kit.b64(bytes(raw))}"
    assert_invalid_token(idp(adv, token), "signature verification failed")


@pytest.mark.parametrize("signature", [b"\0" * 64, b"", b"\0" * 32, b"\xff" * 64])
def test_es256_degenerate_signatures(adv: Adv, signature: bytes) -> None:
    token = jwt_kit.raw_token({"alg": "ES256", "kid": "ec-1"}, idp_claims(), signature)
    assert_invalid_token(idp(adv, token), "signature verification failed")


def test_empty_signature_rs256(adv: Adv) -> None:
    head, body, _ = jwt_kit.mint(adv.rsa).split(".")
    assert_invalid_token(idp(adv, f"{head}.{body}."), "signature verification failed")


# --- claims and time --------------------------------------------------------------


def test_expired_beyond_skew(adv: Adv) -> None:
    now = int(time.time())
    token = jwt_kit.mint(adv.rsa, exp=now - SKEW - 10, iat=now - 600, nbf=now - 600)
    assert_invalid_token(idp(adv, token), "token expired")


def test_expired_within_skew_is_accepted(adv: Adv) -> None:
    now = int(time.time())
    token = jwt_kit.mint(adv.rsa, exp=now - SKEW + 10, iat=now - 600, nbf=now - 600)
    assert idp(adv, token).allowed


def test_not_yet_valid_beyond_skew(adv: Adv) -> None:
    now = int(time.time())
    token = jwt_kit.mint(adv.rsa, nbf=now + SKEW + 10, iat=now)
    assert_invalid_token(idp(adv, token), "token not yet valid")


def test_not_yet_valid_within_skew_is_accepted(adv: Adv) -> None:
    now = int(time.time())
    token = jwt_kit.mint(adv.rsa, nbf=now + SKEW - 10, iat=now)
    assert idp(adv, token).allowed


def test_issued_in_the_future_beyond_skew(adv: Adv) -> None:
    now = int(time.time())
    token = jwt_kit.mint(adv.rsa, iat=now + SKEW + 60, nbf=now)
    assert_invalid_token(idp(adv, token), "token issued in the future")


@pytest.mark.parametrize(
    "exp", ['"9999999999"', "true", "false", "null", "[1]", "{}", "1e400", "10" * 200]
)
def test_exp_of_the_wrong_type(adv: Adv, exp: str) -> None:
    # null and 1e400 (inf) once passed as "never expires".
    claims = json.dumps({**idp_claims(), "exp": 0}).replace('"exp": 0', f'"exp": {exp}')
    token = sign(adv.rsa, {"alg": "RS256", "kid": "rsa-1"}, claims.encode())
    assert_invalid_token(idp(adv, token), "malformed 'exp' claim")


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_non_json_number_constants_are_malformed(adv: Adv, constant: str) -> None:
    claims = json.dumps({**idp_claims(), "exp": 0}).replace('"exp": 0', f'"exp": {constant}')
    token = sign(adv.rsa, {"alg": "RS256", "kid": "rsa-1"}, claims.encode())
    assert_invalid_token(idp(adv, token), "malformed token")


def test_missing_sub(adv: Adv) -> None:
    assert_invalid_token(idp(adv, jwt_kit.mint(adv.rsa, sub=None)), "missing required claim 'sub'")


@pytest.mark.parametrize("iss", ["https://evil.test", "https://issuer.test/", None, 1])
def test_wrong_or_missing_issuer(adv: Adv, iss: Any) -> None:
    claims = {k: v for k, v in {**idp_claims(), "iss": iss}.items() if v is not None}
    token = sign(adv.rsa, {"alg": "RS256", "kid": "rsa-1"}, json.dumps(claims).encode())
    assert_invalid_token(idp(adv, token), "issuer not accepted")


@pytest.mark.parametrize("aud", ["other-api", None, ["other-api", "x"], [], 5, "orders-api "])
def test_wrong_or_missing_audience(adv: Adv, aud: Any) -> None:
    token = jwt_kit.mint(adv.rsa, aud=aud)
    assert_invalid_token(idp(adv, token), "audience not accepted")


def test_audience_list_containing_ours_is_accepted(adv: Adv) -> None:
    token = jwt_kit.mint(adv.rsa, aud=["other-api", jwt_kit.AUDIENCE])
    assert idp(adv, token).allowed


# --- size -----------------------------------------------------------------------


def test_16_kib_token_is_refused_as_too_large(adv: Adv) -> None:
    token = jwt_kit.mint(adv.rsa, padding="p" * 16 * 1024)
    assert len(token) > 16 * 1024
    started = time.perf_counter()
    answer = idp(adv, token)
    assert time.perf_counter() - started < 5  # refused by size, not parsed
    assert_invalid_token(answer, "credential too large")


# --- unknown-kid storm ------------------------------------------------------------


def test_random_kid_storm_fetches_jwks_at_most_once_per_cooldown(adv: Adv) -> None:
    before = adv.jwks_server.hits_for("/jwks.json")
    for _ in range(200):
        token = remote_token(adv, kid=secrets.token_hex(8))
        assert_invalid_token(check(adv, token), "unknown key id")
    assert adv.jwks_server.hits_for("/jwks.json") - before <= 1
    assert adv.canary.total_hits() == 0
    assert check(adv, remote_token(adv)).allowed  # the real key still works


# --- API keys --------------------------------------------------------------------


@pytest.mark.parametrize(
    "key", [API_KEY + "x", API_KEY[:-1], API_KEY.upper(), "tg_live_" + "0" * 20, API_KEY * 2]
)
def test_wrong_api_key(adv: Adv, key: str) -> None:
    answer = check(adv, key, "/orders/1", header="x-api-key", prefix="")
    assert answer.status == 401
    assert answer.body["error"] == "invalid_token"
    assert answer.body["error_description"] == "unknown API key"
    assert API_KEY not in answer.raw.denied_response.body


@pytest.mark.parametrize("key", [API_KEY + "\n", API_KEY + " ", " " + API_KEY, API_KEY + "\t"])
def test_api_key_with_surrounding_whitespace_is_the_key_after_ows_trimming(
    adv: Adv, key: str
) -> None:
    # RFC 9110 §5.5: leading/trailing whitespace is not part of a field value;
    # Envoy trims it the same way, so the trimmed key is the key presented.
    answer = check(adv, key, "/orders/1", header="x-api-key", prefix="")
    assert answer.allowed
    assert answer.metadata["subject"] == "svc-billing"


@pytest.mark.parametrize("key", [API_KEY[:8] + "\n" + API_KEY[8:], API_KEY[:8] + " " + API_KEY[8:]])
def test_api_key_with_inner_whitespace_is_malformed(adv: Adv, key: str) -> None:
    answer = check(adv, key, "/orders/1", header="x-api-key", prefix="")
    assert answer.status == 400
    assert answer.body["error"] == "invalid_request"
    assert answer.body["error_description"] == "malformed credential"


@pytest.mark.parametrize("key", ["", "   "])
def test_empty_api_key_is_400(adv: Adv, key: str) -> None:
    answer = check(adv, key, "/orders/1", header="x-api-key", prefix="")
    assert answer.status == 400
    assert answer.body["error"] == "invalid_request"
    assert answer.body["error_description"] == "empty credential"


def test_api_key_sent_as_bearer_is_not_an_api_key(adv: Adv) -> None:
    assert_invalid_token(idp(adv, API_KEY), "malformed token")


# --- peers -----------------------------------------------------------------------


def _peer(adv: Adv, principal: str = "", headers: dict[str, str] | None = None) -> Answer:
    return adv.client.check(check_request(path="/admin/x", principal=principal, headers=headers))


def test_xfcc_header_without_mtls_is_ignored(adv: Adv) -> None:
    xfcc = 'Hash=abc;URI=spiffe://tollgate.test/ns/prod/sa/admin;By=spiffe://tollgate.test/e'
    answer = _peer(adv, headers={"x-forwarded-client-cert": xfcc})
    assert answer.status == 401
    assert answer.body["error"] == "missing_credentials"


def test_xfcc_header_cannot_upgrade_a_real_peer(adv: Adv) -> None:
    xfcc = "URI=spiffe://tollgate.test/ns/prod/sa/admin"
    answer = _peer(
        adv, "spiffe://tollgate.test/ns/prod/sa/web", {"x-forwarded-client-cert": xfcc}
    )
    assert answer.status == 403
    assert answer.body == {
        "error": "peer_not_allowed",
        "error_description": "peer not allowed",
        "request_id": "req-1",
    }


@pytest.mark.parametrize(
    ("principal", "description"),
    [
        ("spiffe://tollgate.test/ns/prod/sa/intruder", "peer not allowed"),
        ("spiffe://tollgate.test/ns/prod/sa/admin/", "peer not allowed"),
        ("spiffe://tollgate.test/ns/prod/sa/ADMIN", "peer not allowed"),
        ("spiffe://evil.test/ns/prod/sa/admin", "peer trust domain not accepted"),
        ("spiffe://tollgate.test.evil.test/ns/prod/sa/admin", "peer trust domain not accepted"),
        ("CN=admin,O=tollgate", "peer identity is not a SPIFFE ID"),
        ("https://tollgate.test/ns/prod/sa/admin", "peer identity is not a SPIFFE ID"),
        ("spiffe://tollgate.test/ns/prod/sa/admin?x=1", "peer identity is not a SPIFFE ID"),
    ],
)
def test_refused_peers(adv: Adv, principal: str, description: str) -> None:
    answer = _peer(adv, principal)
    assert answer.status == 403
    assert answer.body["error"] == "peer_not_allowed"
    assert answer.body["error_description"] == description
    assert answer.header("www-authenticate") is None


# --- scopes ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "scope", ["orders:read", "orders:writeX", "orders:wri", "ORDERS:WRITE", "orders:write:x"]
)
def test_missing_or_lookalike_scope_is_403(adv: Adv, scope: str) -> None:
    answer = idp(adv, jwt_kit.mint(adv.rsa, scope=scope), "/orders", "POST")
    assert answer.status == 403
    assert answer.body["error"] == "insufficient_scope"
    assert answer.header("www-authenticate") == (
        'Bearer realm="tollgate", error="insufficient_scope", scope="orders:write"'
    )


def test_exact_scope_is_allowed(adv: Adv) -> None:
    answer = idp(adv, jwt_kit.mint(adv.rsa, scope="orders:writeX orders:write"), "/orders", "POST")
    assert answer.allowed


def test_api_key_scope_does_not_grant_write(adv: Adv) -> None:
    answer = check(adv, API_KEY, "/orders", "POST", header="x-api-key", prefix="")
    assert answer.status == 403
    assert answer.body["error"] == "insufficient_scope"


# --- several credentials --------------------------------------------------------


def test_token_in_header_and_cookie_is_400(adv: Adv) -> None:
    token = jwt_kit.mint(adv.rsa)
    answer = check(adv, token, "/web", extra={"cookie": f"theme=dark; session={token}"})
    assert answer.status == 400
    assert answer.body["error"] == "invalid_request"
    assert answer.body["error_description"] == "credentials sent by more than one method"


def test_token_in_cookie_alone_is_allowed(adv: Adv) -> None:
    token = jwt_kit.mint(adv.rsa)
    answer = adv.client.check(check_request(path="/web", headers={"cookie": f"session={token}"}))
    assert answer.allowed
    assert_not_echoed(answer, token)


def test_cookie_twice_is_400(adv: Adv) -> None:
    token = jwt_kit.mint(adv.rsa)
    cookie = f"session={token}; session={token}"
    answer = adv.client.check(check_request(path="/web", headers={"cookie": cookie}))
    assert answer.status == 400
    assert answer.body["error_description"] == "credentials sent more than once"
    assert_not_echoed(answer, token)


def test_valid_token_is_not_echoed_when_allowed(adv: Adv) -> None:
    token = jwt_kit.mint(adv.rsa)
    answer = idp(adv, token)
    assert answer.allowed
    assert "authorization" in answer.removed


@pytest.mark.parametrize(
    "sub", ["alice\r\nx-tollgate-scopes: admin", "alice\nx: y", "bob\u0000", "a" * 2000]
)
def test_claims_cannot_inject_upstream_headers(adv: Adv, sub: str) -> None:
    token = jwt_kit.mint(adv.rsa, sub=sub, email="e@x.test\r\nx-admin: 1")
    answer = idp(adv, token)
    assert answer.allowed
    assert answer.header("x-tollgate-subject") is None
    assert answer.header("x-user-email") is None
    assert {"x-tollgate-subject", "x-user-email"} <= set(answer.removed)
    for option in answer.raw.ok_response.headers:
        assert not any(c in option.header.value for c in "\r\n\0")


def test_bearer_scheme_is_case_insensitive(adv: Adv) -> None:
    token = jwt_kit.mint(adv.rsa)
    assert check(adv, token, "/orders/1", prefix="bEaReR ").allowed


def test_cookie_split_over_header_lines_is_read(adv: Adv) -> None:
    # RFC 9113 §8.2.3: HTTP/2 may carry cookies as separate header lines.
    token = jwt_kit.mint(adv.rsa)
    request = check_request(
        path="/web", raw_headers=[("cookie", "theme=dark"), ("cookie", f"session={token}")]
    )
    answer = adv.client.check(request)
    assert answer.allowed
    assert_not_echoed(answer, token)


def test_session_cookie_on_two_header_lines_is_400(adv: Adv) -> None:
    token = jwt_kit.mint(adv.rsa)
    request = check_request(
        path="/web", raw_headers=[("cookie", f"session={token}"), ("cookie", f"session={token}")]
    )
    answer = adv.client.check(request)
    assert answer.status == 400
    assert answer.body["error_description"] == "credentials sent more than once"
    assert_not_echoed(answer, token)


@pytest.mark.parametrize(
    "path",
    [
        "/public/..;/admin/users",
        "/public/..;x/admin/users",
        "/public/.;/x",
        "/public/x/..",
        "/public/%2e%2e/admin",
        "/public/%2E./admin",
        "/public\\..\\admin",
        "/public//admin",
        "/public/%00",
    ],
)
def test_dot_segments_that_upstreams_normalise_are_refused(adv: Adv, path: str) -> None:
    # Tomcat/Jetty-style upstreams drop ";params" before normalising, so
    # /public/..;/admin reaches /admin while matching the anonymous /public/ route.
    answer = adv.client.check(check_request(path=path))
    assert answer.status == 400
    assert answer.body["error_description"] == "ambiguous request path"


def test_public_prefix_route_is_anonymous(adv: Adv) -> None:
    assert adv.client.check(check_request(path="/public/a;b/..x/.y")).allowed
