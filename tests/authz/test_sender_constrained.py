"""Sender-constrained tokens through the pipeline, with an injected clock and no process:
RFC 8705 certificate-bound tokens (cnf.x5t#S256) and RFC 9449 DPoP (cnf.jkt + a proof),
every refusal case of both RFCs, and the in-memory replay store."""

from __future__ import annotations

import asyncio
import hashlib
import json
import urllib.parse
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from jwt.algorithms import ECAlgorithm

from authz_service import cli
from authz_service.config import AuthzConfig
from authz_service.identity.dpop import jwk_thumbprint, normal_htu, normal_path
from authz_service.identity.dpop_replay import (
    MemoryReplayStore,
    RedisReplayStore,
    ReplayStoreUnavailable,
)
from authz_service.identity.jwt import JwtSource, KeyProvider
from authz_service.keys.keyset import KeySet, parse_jwks
from authz_service.keys.registry import KeyRegistry
from authz_service.models import Allow, Answer, Deny, RequestContext
from authz_service.pipeline import Pipeline
from authz_service.policy.compiled import compile_config
from authz_service.policy.loading import load_policy
from tests.kits import dpop_kit, jwt_kit
from tests.kits.processes import free_port
from tests.kits.redis_procs import RedisProcess
from tollgate.reload import ConfigHolder
from tollgate_cli import devcerts

NOW = 1_700_000_000.0
ISSUER_KEY = jwt_kit.rsa_key("rsa-1")
PROOF_KEY = jwt_kit.ec_key("proof")
OTHER_PROOF_KEY = jwt_kit.ec_key("proof-2")
URL = "https://api.test/orders/1"
SECRET_ENV = "TOLLGATE_TEST_DPOP_NONCE_SECRET"


class StaticKeys:
    generation = 1

    def __init__(self, keys: KeySet) -> None:
        self.key_set = keys


def source(name: str, issuer: str, **settings: Any) -> dict[str, Any]:
    return {"name": name, "jwt": {"issuer": issuer, "jwks_file": "unused.json", "audiences": "any",
                                  "algorithms": ["RS256"], **settings}}


def config(**idp: Any) -> dict[str, Any]:
    return {
        "identities": [
            source("idp", jwt_kit.ISSUER, **{"dpop": "allow", **idp}),
            source("dpop-only", "https://dpop.test", dpop="require"),
            source("cert-only", "https://mtls.test", certificate_binding="require"),
            source("plain", "https://plain.test"),
        ],
        "routes": [
            {"name": "orders", "match": {"path": {"prefix": "/orders"}}, "identities": ["idp"]},
            {"name": "strict", "match": {"path": {"prefix": "/strict"}},
             "identities": ["dpop-only"]},
            {"name": "bound", "match": {"path": {"prefix": "/bound"}},
             "identities": ["cert-only"]},
            {"name": "plain", "match": {"path": {"prefix": "/plain"}}, "identities": ["plain"]},
        ],
    }


class Service:
    """The real pipeline over a compiled policy, keys fixed, the clock ours."""

    def __init__(self, settings: dict[str, Any] | None = None,
                 replay: MemoryReplayStore | None = None) -> None:
        """`replay`: the store to read in the test; the pipeline's may be replaced."""
        keys = parse_jwks(json.dumps(jwt_kit.jwks(ISSUER_KEY)))

        def factory(name: str, source: JwtSource) -> KeyProvider:
            return StaticKeys(keys)

        policy = compile_config(AuthzConfig.model_validate(settings or config()), factory)
        self.now = NOW
        self.replay = replay if replay is not None else MemoryReplayStore()
        self.pipeline = Pipeline(ConfigHolder(policy), KeyRegistry(), clock=lambda: self.now,
                                 replay=self.replay)

    def ask(self, headers: dict[str, str], path: str = "/orders/1", *, method: str = "GET",
            host: str = "api.test", **peer: Any) -> Answer:
        ctx = RequestContext(method=method, path=path, host=host, scheme="https",
                             headers=headers, **peer)
        return asyncio.run(self.pipeline.decide(ctx))


def token(issuer: str = jwt_kit.ISSUER, **cnf: Any) -> str:
    claims: dict[str, Any] = {"iat": NOW, "nbf": NOW, "exp": NOW + 600}
    if cnf:
        claims["cnf"] = cnf
    return jwt_kit.mint(ISSUER_KEY, iss=issuer, **claims)


def dpop_token(key: jwt_kit.SigningKey = PROOF_KEY, issuer: str = jwt_kit.ISSUER) -> str:
    return token(issuer, jkt=dpop_kit.thumbprint(dpop_kit.proof_jwk(key)))


def dpop_headers(access: str, proof: str) -> dict[str, str]:
    return {"authorization": f"DPoP {access}", "dpop": proof}


def proof(access: str | None, method: str = "GET", url: str = URL, **kw: Any) -> str:
    if "iat" not in kw:
        kw["iat"] = NOW
    key = kw.pop("key", PROOF_KEY)
    return dpop_kit.proof(key, method, url, access, **kw)


def denied(answer: Answer) -> Deny:
    assert isinstance(answer.decision, Deny), answer.decision
    return answer.decision


def allowed(answer: Answer) -> Allow:
    assert isinstance(answer.decision, Allow), answer.decision
    return answer.decision


@pytest.fixture
def service() -> Service:
    return Service()


@pytest.fixture(scope="module")
def client_cert(tmp_path_factory: pytest.TempPathFactory) -> x509.Certificate:
    certs = devcerts.ensure(tmp_path_factory.mktemp("certs"))
    return x509.load_pem_x509_certificate(certs.client_cert("admin").read_bytes())


def x5t(certificate: x509.Certificate) -> str:
    return jwt_kit.b64(certificate.fingerprint(hashes.SHA256()))


def peer_hex(certificate: x509.Certificate) -> dict[str, Any]:
    """The peer as the HTTP door sees it: Envoy's %DOWNSTREAM_PEER_FINGERPRINT_256%."""
    return {"peer_certificate_sha256": certificate.fingerprint(hashes.SHA256()).hex(),
            "peer_certificate": True}


def peer_pem(certificate: x509.Certificate) -> dict[str, Any]:
    """The peer as the gRPC door sees it: attributes.source.certificate, URL-encoded PEM."""
    pem = certificate.public_bytes(serialization.Encoding.PEM).decode()
    return {"peer_certificate_pem": urllib.parse.quote(pem, safe=""), "peer_certificate": True}


# --- RFC 8705: certificate-bound tokens ------------------------------------------------


@pytest.mark.parametrize("peer", [peer_hex, peer_pem], ids=["http-fingerprint", "grpc-pem"])
def test_a_certificate_bound_token_is_accepted_from_its_certificate(
        service: Service, client_cert: x509.Certificate, peer: Any) -> None:
    bound = token(**{"x5t#S256": x5t(client_cert)})
    answer = service.ask({"authorization": f"Bearer {bound}"}, **peer(client_cert))
    assert allowed(answer).identity.subject == "user-1"


def test_a_certificate_bound_token_from_another_certificate_is_refused(
        service: Service, client_cert: x509.Certificate) -> None:
    other = jwt_kit.b64(hashlib.sha256(b"another certificate").digest())
    answer = service.ask({"authorization": f"Bearer {token(**{'x5t#S256': other})}"},
                         **peer_hex(client_cert))
    deny = denied(answer)
    assert (deny.status, deny.code) == (401, "invalid_token")
    assert deny.description == "token is bound to another client certificate"


def test_a_certificate_bound_token_without_a_client_certificate_is_refused(
        service: Service, client_cert: x509.Certificate) -> None:
    answer = service.ask({"authorization": f"Bearer {token(**{'x5t#S256': x5t(client_cert)})}"})
    deny = denied(answer)
    assert (deny.status, deny.code) == (401, "invalid_token")
    assert "none was presented" in deny.description


def test_a_cached_bound_token_is_checked_against_every_requests_certificate(
        service: Service, client_cert: x509.Certificate) -> None:
    headers = {"authorization": f"Bearer {token(**{'x5t#S256': x5t(client_cert)})}"}
    assert isinstance(service.ask(headers, **peer_hex(client_cert)).decision, Allow)
    stolen = service.ask(headers, peer_certificate_sha256="ab" * 32, peer_certificate=True)
    assert denied(stolen).description == "token is bound to another client certificate"


def test_require_refuses_a_token_that_is_not_certificate_bound(
        service: Service, client_cert: x509.Certificate) -> None:
    answer = service.ask({"authorization": f"Bearer {token('https://mtls.test')}"},
                         "/bound", **peer_hex(client_cert))
    assert denied(answer).description == "token is not bound to a client certificate"
    bound = token("https://mtls.test", **{"x5t#S256": x5t(client_cert)})
    answer = service.ask({"authorization": f"Bearer {bound}"}, "/bound", **peer_hex(client_cert))
    assert isinstance(answer.decision, Allow)


def test_when_present_accepts_a_plain_bearer_token(service: Service) -> None:
    assert isinstance(service.ask({"authorization": f"Bearer {token()}"}).decision, Allow)


@pytest.mark.parametrize("cnf", [{"x5t#S256": "short"}, {"x5t#S256": 7}], ids=["short", "number"])
def test_a_malformed_certificate_binding_is_refused_not_ignored(
        service: Service, client_cert: x509.Certificate, cnf: dict[str, Any]) -> None:
    answer = service.ask({"authorization": f"Bearer {token(**cnf)}"}, **peer_hex(client_cert))
    assert denied(answer).description == "malformed 'cnf.x5t#S256' claim"


@pytest.mark.parametrize("cnf", [
    {"jwk": {"kty": "EC", "crv": "P-256", "x": "x", "y": "y"}}, {"kid": "k1"},
    {"jku": "https://keys.test"}, {}], ids=["jwk", "kid", "jku", "empty"])
def test_a_confirmation_this_service_cannot_check_is_refused_not_taken_for_bearer(
        service: Service, cnf: dict[str, Any]) -> None:
    # RFC 7800 proof-of-possession keys other than RFC 8705's and RFC 9449's.
    bound = jwt_kit.mint(ISSUER_KEY, iat=NOW, nbf=NOW, exp=NOW + 600, cnf=cnf)
    answer = service.ask({"authorization": f"Bearer {bound}"})
    assert denied(answer).description == "unsupported confirmation method in 'cnf'"


# --- RFC 9449: DPoP --------------------------------------------------------------------


def test_a_dpop_token_with_a_fresh_proof_is_accepted_and_its_proof_stripped(
        service: Service) -> None:
    access = dpop_token()
    allow = allowed(service.ask(dpop_headers(access, proof(access))))
    assert allow.identity.subject == "user-1"
    assert {"authorization", "dpop"} <= set(allow.remove_headers)


def test_a_replayed_proof_is_refused(service: Service) -> None:
    access = dpop_token()
    headers = dpop_headers(access, proof(access))
    assert isinstance(service.ask(headers).decision, Allow)
    service.now += 1
    deny = denied(service.ask(headers))
    assert (deny.status, deny.code, deny.description) == (
        401, "invalid_dpop_proof", "DPoP proof already used")
    assert deny.challenge is not None
    assert deny.challenge.startswith('DPoP realm="tollgate", error="invalid_dpop_proof"')
    assert 'algs="ES256 EdDSA RS256 PS256"' in deny.challenge


def test_a_shadow_route_still_spends_the_proof_of_a_caller_it_lets_through() -> None:
    """Shadow mode lets a refused caller through, but never a replayed proof: the proof
    is spent whether or not the policy permits, so its replay is refused."""
    settings = config()
    settings["routes"][0]["shadow"] = True
    settings["routes"][0]["require"] = {"scopes": {"all_of": ["orders:admin"]}}
    shadow = Service(settings)
    access = dpop_token()
    headers = dpop_headers(access, proof(access))
    first = shadow.ask(headers)
    assert isinstance(first.decision, Allow)
    assert first.shadowed is not None and first.shadowed.code == "insufficient_scope"
    shadow.now += 1
    deny = denied(shadow.ask(headers))
    assert (deny.code, deny.description) == ("invalid_dpop_proof", "DPoP proof already used")


def test_a_proof_is_forgotten_once_its_window_has_passed(service: Service) -> None:
    access = dpop_token()
    service.ask(dpop_headers(access, proof(access)))
    assert len(service.replay) == 1
    service.now += 66  # max_age 60 + skew 5, and one more
    service.ask(dpop_headers(access, proof(access, iat=service.now)))
    assert len(service.replay) == 1  # the first one dropped, the new one kept


@pytest.mark.parametrize(("method", "url", "path", "reason"), [
    ("POST", URL, "/orders/1", "DPoP proof is for another method"),
    ("get", URL, "/orders/1", "DPoP proof is for another method"),
    ("GET", "https://api.test/orders/2", "/orders/1", "DPoP proof is for another URL"),
    ("GET", "https://evil.test/orders/1", "/orders/1", "DPoP proof is for another URL"),
    ("GET", "http://api.test/orders/1", "/orders/1", "DPoP proof is for another URL"),
    ("GET", "https://api.test:8443/orders/1", "/orders/1", "DPoP proof is for another URL"),
    ("GET", "/orders/1", "/orders/1", "DPoP proof is for another URL"),
])
def test_a_proof_for_another_request_is_refused(
        service: Service, method: str, url: str, path: str, reason: str) -> None:
    access = dpop_token()
    deny = denied(service.ask(dpop_headers(access, proof(access, method, url)), path))
    assert (deny.code, deny.description) == ("invalid_dpop_proof", reason)


@pytest.mark.parametrize("url", [
    "https://api.test/orders/1?page=2#top",  # query and fragment are not compared
    "HTTPS://API.TEST:443/orders/1",  # scheme and host case, the default port
    "https://api.test/orders/./x/../1",  # dot segments, as Envoy's normalize_path
    "https://api.test//orders//1",  # doubled slashes, as Envoy's merge_slashes
    "https://api.test/%6Frders/1",  # an encoded unreserved character
])
def test_htu_is_compared_after_envoys_normalisation(service: Service, url: str) -> None:
    access = dpop_token()
    assert isinstance(service.ask(dpop_headers(access, proof(access, url=url))).decision, Allow)


@pytest.mark.parametrize(("iat", "reason"), [
    (NOW - 66, "DPoP proof is too old"),
    (NOW + 6, "DPoP proof issued in the future"),
    ("now", "DPoP proof needs an 'iat'"),
    (None, "DPoP proof needs an 'iat'"),
])
def test_a_stale_or_future_iat_is_refused(service: Service, iat: Any, reason: str) -> None:
    access = dpop_token()
    assert denied(service.ask(dpop_headers(access, proof(access, iat=iat)))).description == \
        reason


def test_iat_within_the_skew_and_window_is_accepted(service: Service) -> None:
    access = dpop_token()
    for iat in (NOW - 64, NOW + 5):
        assert isinstance(service.ask(dpop_headers(access, proof(access, iat=iat))).decision,
                          Allow)


@pytest.mark.parametrize("ath", ["wrong", None], ids=["wrong", "missing"])
def test_a_proof_for_another_access_token_is_refused(service: Service, ath: str | None) -> None:
    access = dpop_token()
    made = proof(None) if ath is None else proof(None, ath=dpop_kit.ath(access) + "x")
    deny = denied(service.ask(dpop_headers(access, made)))
    assert deny.description == "DPoP proof is for another access token ('ath')"


def test_a_proof_with_alg_none_is_refused(service: Service) -> None:
    access = dpop_token()
    made = dpop_kit.raw_proof(
        {"typ": "dpop+jwt", "alg": "none", "jwk": dpop_kit.proof_jwk(PROOF_KEY)},
        {"jti": "n", "htm": "GET", "htu": URL, "iat": NOW, "ath": dpop_kit.ath(access)})
    assert denied(service.ask(dpop_headers(access, made))).description == \
        "DPoP proof: algorithm not allowed"


def test_a_proof_with_a_symmetric_key_is_refused(service: Service) -> None:
    access = dpop_token()
    secret = b"0123456789abcdef0123456789abcdef"
    oct_jwk = {"kty": "oct", "k": jwt_kit.b64(secret)}
    made = jwt.encode(
        {"jti": "s", "htm": "GET", "htu": URL, "iat": int(NOW), "ath": dpop_kit.ath(access)},
        secret, algorithm="HS256", headers={"typ": "dpop+jwt", "jwk": oct_jwk})
    assert denied(service.ask(dpop_headers(access, made))).description == \
        "DPoP proof: algorithm not allowed"
    # and an oct key under an allowed alg name is refused for the key itself
    made = dpop_kit.proof(PROOF_KEY, "GET", URL, access, iat=NOW, jwk=oct_jwk)
    assert denied(service.ask(dpop_headers(access, made))).description == \
        "DPoP proof key is symmetric"


def test_a_proof_whose_jwk_carries_the_private_key_is_refused(service: Service) -> None:
    access = dpop_token()
    private = json.loads(ECAlgorithm.to_jwk(PROOF_KEY.private))
    made = proof(access, jwk=private)
    assert denied(service.ask(dpop_headers(access, made))).description == \
        "DPoP proof key contains private key material"


def test_a_proof_signed_by_another_key_than_its_jwk_is_refused(service: Service) -> None:
    access = dpop_token()
    made = proof(access, key=OTHER_PROOF_KEY, jwk=dpop_kit.proof_jwk(PROOF_KEY))
    assert denied(service.ask(dpop_headers(access, made))).description == \
        "DPoP proof signature verification failed"


def test_a_proof_by_a_key_the_token_is_not_bound_to_is_refused(service: Service) -> None:
    access = dpop_token(OTHER_PROOF_KEY)
    deny = denied(service.ask(dpop_headers(access, proof(access))))
    assert deny.description == "DPoP proof key is not the key the token is bound to"


@pytest.mark.parametrize("typ", ["JWT", "at+jwt"])
def test_a_proof_of_another_type_is_refused(service: Service, typ: str) -> None:
    access = dpop_token()
    assert denied(service.ask(dpop_headers(access, proof(access, typ=typ)))).description == \
        "DPoP proof: wrong token type"


@pytest.mark.parametrize("jti", [None, "", "x" * 257])
def test_a_proof_without_a_usable_jti_is_refused(service: Service, jti: str | None) -> None:
    access = dpop_token()
    made = proof(access, jti=jti)
    assert denied(service.ask(dpop_headers(access, made))).description == \
        "DPoP proof needs a 'jti'"


def test_no_credentials_on_a_dpop_route_offers_both_schemes(service: Service) -> None:
    deny = denied(service.ask({}))
    assert deny.code == "missing_credentials"
    assert deny.challenge == ('Bearer realm="tollgate", '
                              'DPoP realm="tollgate", algs="ES256 EdDSA RS256 PS256"')
    assert denied(service.ask({}, "/plain")).challenge == 'Bearer realm="tollgate"'


def test_a_dpop_token_without_its_proof_is_refused(service: Service) -> None:
    access = dpop_token()
    deny = denied(service.ask({"authorization": f"DPoP {access}"}))
    assert (deny.status, deny.code, deny.description) == (
        401, "invalid_dpop_proof", "missing DPoP proof")


def test_two_proofs_are_refused(service: Service) -> None:
    access = dpop_token()
    two = f"{proof(access)},{proof(access)}"
    assert denied(service.ask(dpop_headers(access, two))).description == \
        "more than one DPoP proof"
    one = RequestContext("GET", "/orders/1", "api.test",
                         headers=dpop_headers(access, proof(access)),
                         duplicate_headers=frozenset({"dpop"}))
    assert denied(asyncio.run(service.pipeline.decide(one))).description == \
        "more than one DPoP proof"


def test_a_dpop_bound_token_sent_as_a_bearer_token_is_refused(service: Service) -> None:
    access = dpop_token()
    deny = denied(service.ask({"authorization": f"Bearer {access}", "dpop": proof(access)}))
    assert (deny.status, deny.code, deny.description) == (
        401, "invalid_token", "DPoP-bound token sent as a bearer token")
    assert deny.challenge is not None and deny.challenge.startswith("DPoP ")


def test_a_bearer_token_sent_with_the_dpop_scheme_is_refused(service: Service) -> None:
    access = token()
    deny = denied(service.ask(dpop_headers(access, proof(access))))
    assert (deny.code, deny.description) == ("invalid_token", "token is not DPoP-bound")


def test_dpop_require_refuses_bearer_tokens(service: Service) -> None:
    deny = denied(service.ask({"authorization": f"Bearer {token('https://dpop.test')}"},
                              "/strict/1"))
    assert (deny.code, deny.description) == ("invalid_token", "token is not DPoP-bound")
    access = dpop_token(issuer="https://dpop.test")
    made = proof(access, url="https://api.test/strict/1")
    assert isinstance(service.ask(dpop_headers(access, made), "/strict/1").decision, Allow)


def test_dpop_off_refuses_dpop_bound_tokens_and_ignores_the_scheme(service: Service) -> None:
    access = dpop_token(issuer="https://plain.test")
    deny = denied(service.ask({"authorization": f"Bearer {access}"}, "/plain"))
    assert deny.description == "DPoP-bound tokens are not accepted here"
    made = proof(access, url="https://api.test/plain")
    deny = denied(service.ask(dpop_headers(access, made), "/plain"))
    assert deny.code == "missing_credentials"  # the DPoP scheme is not this source's


def test_a_cached_dpop_token_still_needs_a_proof_each_time(service: Service) -> None:
    access = dpop_token()
    assert isinstance(service.ask(dpop_headers(access, proof(access))).decision, Allow)
    assert denied(service.ask({"authorization": f"DPoP {access}"})).description == \
        "missing DPoP proof"
    assert isinstance(service.ask(dpop_headers(access, proof(access))).decision, Allow)


def test_server_nonces_are_asked_for_then_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SECRET_ENV, "a-shared-secret-of-every-replica")
    service = Service(config(dpop_proof={"nonce_secret_env": SECRET_ENV}))
    access = dpop_token()
    deny = denied(service.ask(dpop_headers(access, proof(access))))
    assert (deny.status, deny.code) == (401, "use_dpop_nonce")
    assert deny.challenge is not None and 'error="use_dpop_nonce"' in deny.challenge
    nonce = dict(deny.headers)["dpop-nonce"]
    assert isinstance(service.ask(dpop_headers(access, proof(access, nonce=nonce))).decision,
                      Allow)
    wrong = proof(access, nonce=nonce[:-2] + "AA")
    assert denied(service.ask(dpop_headers(access, wrong))).code == "use_dpop_nonce"
    service.now += 121  # two nonce lifetimes later the nonce is stale
    late = proof(access, nonce=nonce, iat=service.now)
    assert denied(service.ask(dpop_headers(access, late))).code == "use_dpop_nonce"


def test_a_full_replay_store_refuses_rather_than_forgets() -> None:
    service = Service(replay=MemoryReplayStore(max_entries=1))
    access = dpop_token()
    assert isinstance(service.ask(dpop_headers(access, proof(access))).decision, Allow)
    deny = denied(service.ask(dpop_headers(access, proof(access))))
    assert (deny.status, deny.code) == (503, "dpop_replay_unavailable")
    with pytest.raises(ReplayStoreUnavailable):
        asyncio.run(MemoryReplayStore(max_entries=0).first_use("k", NOW + 1, NOW))


def test_the_memory_store_remembers_a_key_until_it_expires_and_again_after() -> None:
    store = MemoryReplayStore()

    async def uses() -> list[bool]:
        return [
            await store.first_use("a", 10, 0), await store.first_use("a", 10, 9.9),
            await store.first_use("b", 12, 1), await store.first_use("a", 21, 11),
            await store.first_use("a", 21, 15), await store.first_use("b", 30, 13),
        ]

    assert asyncio.run(uses()) == [True, False, True, True, False, True]


# --- the pure helpers and the settings ------------------------------------------------


def test_jwk_thumbprint_matches_rfc_7638s_example() -> None:
    jwk = {  # RFC 7638 §3.1
        "kty": "RSA", "e": "AQAB", "alg": "RS256", "kid": "2011-04-29",
        "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6"
             "tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v"
             "-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08q"
             "NLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8aw"
             "apJzKnqDKgw",
    }
    assert jwk_thumbprint(jwk) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


@pytest.mark.parametrize(("path", "normal"), [
    ("/a/b/../c/", "/a/c/"), ("/a/..", "/"), ("/../a", "/a"), ("/a/./b", "/a/b"),
    ("//a///b", "/a/b"), ("/%7euser/%2F", "/~user/%2F"), ("", "/"),
])
def test_paths_are_normalised_as_envoy_does(path: str, normal: str) -> None:
    assert normal_path(path) == normal


@pytest.mark.parametrize("htu", ["https://user@api.test/", "ftp://api.test/", "https:///x",
                                 "https://api.test:99999/"])
def test_unusable_htu_values_match_nothing(htu: str) -> None:
    assert normal_htu(htu) is None


@pytest.mark.parametrize(("settings", "message"), [
    ({"dpop_proof": {"algorithms": ["HS256"]}}, "DPoP proof algorithm 'HS256' is not allowed"),
    ({"dpop_proof": {"algorithms": ["none"]}}, "DPoP proof algorithm 'none' is not allowed"),
    ({"dpop_proof": {"algorithms": []}}, "at least one DPoP proof algorithm is required"),
    ({"dpop": "sometimes"}, "Input should be 'require', 'allow' or 'off'"),
    ({"certificate_binding": "maybe"}, "Input should be 'require' or 'when_present'"),
])
def test_unsafe_dpop_settings_are_refused(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AuthzConfig.model_validate(config(**settings))


def test_dpop_off_unquoted_in_yaml_means_off(tmp_path: Path) -> None:
    (tmp_path / "jwks.json").write_text(json.dumps(jwt_kit.jwks(ISSUER_KEY)))
    (tmp_path / "authz.yaml").write_text(
        "identities:\n  - name: idp\n    jwt: {issuer: https://x.test, jwks_file: jwks.json,"
        " audiences: any,"
        " dpop: off}\nroutes:\n  - name: all\n")
    policy = load_policy(tmp_path / "authz.yaml", KeyRegistry())
    assert policy.config.identities[0].jwt.dpop == "off"


def test_a_nonce_secret_that_is_not_set_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SECRET_ENV, raising=False)
    with pytest.raises(ValueError, match=f"'{SECRET_ENV}' must hold a secret"):
        Service(config(dpop_proof={"nonce_secret_env": SECRET_ENV}))


# --- replicas sharing spent proofs in a real Redis -------------------------------------


@pytest.mark.integration
def test_replicas_sharing_a_redis_refuse_a_proof_spent_on_another(tmp_path: Path) -> None:
    server = RedisProcess(tmp_path)
    server.start()
    try:
        first, second = Service(), Service()
        access = dpop_token()
        headers = dpop_headers(access, proof(access))
        ctx = RequestContext("GET", "/orders/1", "api.test", headers=headers)

        async def both() -> tuple[Answer, Answer, Answer, int]:
            stores = [RedisReplayStore(server.url, timeout=5, key_prefix="t:")
                      for _ in range(2)]
            first.pipeline.replay, second.pipeline.replay = stores
            try:
                spent = await first.pipeline.decide(ctx)
                replayed = await second.pipeline.decide(ctx)
                fresh_ctx = RequestContext("GET", "/orders/1", "api.test",
                                           headers=dpop_headers(access, proof(access)))
                fresh = await second.pipeline.decide(fresh_ctx)
                keys = await stores[0].connection.call("KEYS", "t:dpop:*")
                ttl = await stores[0].connection.call("PTTL", keys[0])
            finally:
                for store in stores:
                    await store.close()
            return spent, replayed, fresh, int(ttl)

        spent, replayed, fresh, ttl = asyncio.run(both())
        assert isinstance(spent.decision, Allow)
        assert denied(replayed).description == "DPoP proof already used"
        assert isinstance(fresh.decision, Allow)
        # remembered only while the proof could be accepted: iat + 60 s + 5 s of skew
        assert 0 < ttl <= 65_000
    finally:
        server.stop()


def test_an_unreachable_replay_redis_refuses_the_proof_with_503() -> None:
    service = Service()
    access = dpop_token()
    ctx = RequestContext("GET", "/orders/1", "api.test",
                         headers=dpop_headers(access, proof(access)))

    async def ask() -> Answer:
        store = RedisReplayStore(f"redis://127.0.0.1:{free_port()}", timeout=2)
        service.pipeline.replay = store
        try:
            return await service.pipeline.decide(ctx)
        finally:
            await store.close()

    deny = denied(asyncio.run(ask()))
    assert (deny.status, deny.code) == (503, "dpop_replay_unavailable")
    assert ("retry-after", "1") in deny.headers


def test_a_replay_redis_url_that_cannot_be_used_is_a_usage_error(
        capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["--dpop-replay-redis-url", "http://127.0.0.1:1"])
    assert exited.value.code == 2
    assert "--dpop-replay-redis-url: 'http://127.0.0.1:1': not a redis://, rediss:// or " \
        "unix:// URL" in capsys.readouterr().err
