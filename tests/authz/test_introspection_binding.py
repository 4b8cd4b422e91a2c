"""Sender-constrained opaque tokens: an introspection answer's `cnf` (RFC 7662 §2.2)
binds the token as a JWT's does (RFC 8705 §3.2, RFC 9449 §6.2), cached or not.

A real RFC 7662 endpoint on 127.0.0.1 answers; DPoP proofs are signed as a client
library would (tests/kits/dpop_kit.py); the service's pipeline runs in this process on
one event loop with its HTTP client. The refusals are the very answers the JWT path
gives (tests/authz/test_sender_constrained.py)."""

from __future__ import annotations

import asyncio
import hashlib
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from pydantic import BaseModel

from authz_service.identity.claim_mapping import ClaimMapping
from authz_service.identity.introspection import IntrospectionSource, judge
from authz_service.identity.jwt import JwtSource
from authz_service.identity.token_binding import BindingSettings, TokenBinding
from authz_service.models import Allow, Answer, Deny, RequestContext
from tests.kits import dpop_kit, jwt_kit
from tests.kits.engine_kit import allow, bearer, deny
from tests.kits.introspection_kit import Endpoint, introspection_endpoint, service_pipeline
from tollgate_cli import devcerts

SECRET_ENV = "TG_TEST_INTROSPECTION_SECRET"
ISSUER = "https://as.test"
HOST = "api.test"
PROOF_KEY = jwt_kit.ec_key("proof")
OTHER_PROOF_KEY = jwt_kit.ec_key("proof-2")
JKT = dpop_kit.thumbprint(dpop_kit.proof_jwk(PROOF_KEY))
CERT_A = hashlib.sha256(b"client certificate A").digest()
CERT_B = hashlib.sha256(b"client certificate B").digest()
# Each route's source: the default settings, DPoP allowed, only certificate-bound
# tokens, only DPoP-bound tokens.
ROUTES = {"orders": {}, "dpop": {"dpop": "allow"},
          "bound": {"certificate_binding": "require"}, "strict": {"dpop": "require"}}


def config_text(url: str, routes: dict[str, dict[str, str]] = ROUTES,
                **route_settings: str) -> str:
    identities, rules = [], []
    for name, binding in routes.items():
        settings = "".join(f"\n      {k}: {v}" for k, v in binding.items())
        identities.append(f"""
  - name: opaque-{name}
    introspection:
      endpoint: {url}
      client: {{method: client_secret_basic, client_id: tollgate, client_secret_env: {SECRET_ENV}}}
      issuers: [{ISSUER}]
      audiences: any
      wait_seconds: 2{settings}""")
        extra = "".join(f"\n    {k}: {v}" for k, v in route_settings.items())
        rules.append(f"""
  - name: {name}
    match: {{path: {{prefix: /{name}}}}}
    identities: [opaque-{name}]{extra}""")
    return "identities:" + "".join(identities) + "\nroutes:" + "".join(rules) + "\n"


class Service:
    """The service's pipeline on a config file, on one event loop for the whole test."""

    def __init__(self, workdir: Path, text: str) -> None:
        self.keys, self.pipeline = service_pipeline(workdir, text)
        self.loop = asyncio.new_event_loop()

    def ask(self, headers: dict[str, str], path: str = "/orders/1", **peer: Any) -> Answer:
        ctx = RequestContext("GET", path, HOST, headers=headers, **peer)
        return self.loop.run_until_complete(self.pipeline.decide(ctx))

    def close(self) -> None:
        self.loop.run_until_complete(self.keys.close())
        self.loop.close()


@pytest.fixture(autouse=True)
def secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SECRET_ENV, "introspection client secret")


@pytest.fixture
def endpoint() -> Iterator[Endpoint]:
    with introspection_endpoint() as server:
        yield server


@pytest.fixture
def service(tmp_path: Path, endpoint: Endpoint) -> Iterator[Service]:
    made = Service(tmp_path, config_text(endpoint.url))
    try:
        yield made
    finally:
        made.close()


def active(endpoint: Endpoint, token: str, **cnf: Any) -> str:
    """`token` is active at the endpoint, bound to `cnf` if given."""
    claims: dict[str, Any] = {"iss": ISSUER, "sub": "alice"}
    if cnf:
        claims["cnf"] = cnf
    endpoint.active(token, **claims)
    return token


def cert_bound(endpoint: Endpoint, token: str, certificate: bytes = CERT_A) -> str:
    return active(endpoint, token, **{"x5t#S256": jwt_kit.b64(certificate)})


def peer(certificate: bytes) -> dict[str, Any]:
    """The peer as the HTTP door sees it: Envoy's %DOWNSTREAM_PEER_FINGERPRINT_256%."""
    return {"peer_certificate_sha256": certificate.hex(), "peer_certificate": True}


def dpop(token: str, proof: str) -> dict[str, str]:
    return {"authorization": f"DPoP {token}", "dpop": proof}


def proof(token: str | None, path: str = "/dpop/1", **kw: Any) -> str:
    key = kw.pop("key", PROOF_KEY)
    return dpop_kit.proof(key, "GET", f"https://{HOST}{path}", token, **kw)


def denied(answer: Answer) -> Deny:
    return deny(answer.decision)


def allowed(answer: Answer) -> Allow:
    return allow(answer.decision)


def invalid_token(answer: Answer) -> str:
    """The RFC 6750 §3.1 answer to a token that is not valid here: its description."""
    deny = denied(answer)
    assert (deny.status, deny.code) == (401, "invalid_token")
    assert deny.challenge is not None
    assert deny.challenge.startswith('Bearer realm="tollgate", error="invalid_token"')
    return deny.description


def dpop_refused(answer: Answer, error: str) -> str:
    """The RFC 9449 §7.1 answer, a DPoP challenge with `error`: its description."""
    deny = denied(answer)
    assert (deny.status, deny.code) == (401, error)
    assert deny.challenge is not None
    assert deny.challenge.startswith(f'DPoP realm="tollgate", error="{error}"')
    return deny.description


# --- RFC 8705: certificate-bound opaque tokens ----------------------------------------


def test_a_certificate_bound_token_is_allowed_from_its_certificate(
        service: Service, endpoint: Endpoint) -> None:
    token = cert_bound(endpoint, "opaque-cert-1")
    assert allowed(service.ask(bearer(token), **peer(CERT_A))).identity.subject == "alice"


def test_the_grpc_doors_peer_certificate_is_compared_too(
        tmp_path_factory: pytest.TempPathFactory, service: Service, endpoint: Endpoint) -> None:
    certs = devcerts.ensure(tmp_path_factory.mktemp("certs"))
    certificate = x509.load_pem_x509_certificate(certs.client_cert("admin").read_bytes())
    token = cert_bound(endpoint, "opaque-cert-pem", certificate.fingerprint(hashes.SHA256()))
    pem = certificate.public_bytes(serialization.Encoding.PEM).decode()
    grpc_peer: dict[str, Any] = {"peer_certificate_pem": urllib.parse.quote(pem, safe=""),
                 "peer_certificate": True}
    assert isinstance(service.ask(bearer(token), **grpc_peer).decision, Allow)
    assert invalid_token(service.ask(bearer(token), **peer(CERT_B))) == \
        "token is bound to another client certificate"


def test_a_certificate_bound_token_from_another_certificate_is_refused(
        service: Service, endpoint: Endpoint) -> None:
    token = cert_bound(endpoint, "opaque-cert-2")
    assert invalid_token(service.ask(bearer(token), **peer(CERT_B))) == \
        "token is bound to another client certificate"


def test_a_certificate_bound_token_without_a_client_certificate_is_refused(
        service: Service, endpoint: Endpoint) -> None:
    token = cert_bound(endpoint, "opaque-cert-3")
    assert invalid_token(service.ask(bearer(token))) == \
        "token is bound to a client certificate; none was presented"


def test_a_cached_verdict_is_still_refused_from_another_peer(
        service: Service, endpoint: Endpoint) -> None:
    token = cert_bound(endpoint, "opaque-cert-4")
    assert isinstance(service.ask(bearer(token), **peer(CERT_A)).decision, Allow)
    assert invalid_token(service.ask(bearer(token), **peer(CERT_B))) == \
        "token is bound to another client certificate"
    assert invalid_token(service.ask(bearer(token))) == \
        "token is bound to a client certificate; none was presented"
    assert isinstance(service.ask(bearer(token), **peer(CERT_A)).decision, Allow)
    assert endpoint.calls_for(token) == 1  # every answer above but the first was cached


def test_a_stolen_token_is_refused_even_on_its_first_use(
        service: Service, endpoint: Endpoint) -> None:
    """The thief is first: the answer is fetched, cached, and the peer still compared."""
    token = cert_bound(endpoint, "opaque-cert-5")
    assert invalid_token(service.ask(bearer(token), **peer(CERT_B))) == \
        "token is bound to another client certificate"
    assert isinstance(service.ask(bearer(token), **peer(CERT_A)).decision, Allow)
    assert endpoint.calls_for(token) == 1


def test_a_malformed_binding_is_refused_not_ignored(
        service: Service, endpoint: Endpoint) -> None:
    active(endpoint, "opaque-bad-x5t", **{"x5t#S256": "short"})
    assert invalid_token(service.ask(bearer("opaque-bad-x5t"), **peer(CERT_A))) == \
        "malformed 'cnf.x5t#S256' claim"
    active(endpoint, "opaque-bad-jkt", jkt=7)
    assert invalid_token(service.ask(bearer("opaque-bad-jkt"))) == "malformed 'cnf.jkt' claim"
    endpoint.active("opaque-bad-cnf", iss=ISSUER, cnf="bound")
    assert invalid_token(service.ask(bearer("opaque-bad-cnf"))) == "malformed 'cnf' claim"
    # RFC 7800's other confirmations say bound too, to a key this service cannot check.
    endpoint.active("opaque-jwk-cnf", iss=ISSUER, cnf={"jwk": {"kty": "OKP"}})
    assert invalid_token(service.ask(bearer("opaque-jwk-cnf"))) == \
        "unsupported confirmation method in 'cnf'"


def test_certificate_binding_require_refuses_an_unbound_token(
        service: Service, endpoint: Endpoint) -> None:
    active(endpoint, "opaque-plain-1")
    assert invalid_token(service.ask(bearer("opaque-plain-1"), "/bound/1", **peer(CERT_A))) \
        == "token is not bound to a client certificate"
    token = cert_bound(endpoint, "opaque-cert-6")
    assert isinstance(service.ask(bearer(token), "/bound/1", **peer(CERT_A)).decision, Allow)


def test_an_unbound_token_is_still_a_bearer_token_by_default(
        service: Service, endpoint: Endpoint) -> None:
    active(endpoint, "opaque-plain-2")
    assert isinstance(service.ask(bearer("opaque-plain-2")).decision, Allow)
    assert isinstance(service.ask(bearer("opaque-plain-2"), **peer(CERT_A)).decision, Allow)


# --- RFC 9449: DPoP-bound opaque tokens -----------------------------------------------


def test_a_dpop_bound_token_is_refused_as_a_bearer_token(
        service: Service, endpoint: Endpoint) -> None:
    token = active(endpoint, "opaque-dpop-1", jkt=JKT)
    answer = service.ask({**bearer(token), "dpop": proof(token)}, "/dpop/1")
    assert dpop_refused(answer, "invalid_token") == "DPoP-bound token sent as a bearer token"
    assert 'algs="ES256 EdDSA RS256 PS256"' in (denied(answer).challenge or "")


def test_dpop_off_refuses_a_dpop_bound_token(service: Service, endpoint: Endpoint) -> None:
    """The default: no proof is checked here, so a token that needs one is never good."""
    token = active(endpoint, "opaque-dpop-2", jkt=JKT)
    assert invalid_token(service.ask(bearer(token))) == "DPoP-bound tokens are not accepted here"
    made = proof(token, "/orders/1")
    assert denied(service.ask(dpop(token, made))).code == "missing_credentials"


def test_a_dpop_bound_token_with_a_proof_by_its_key_is_allowed_and_stripped(
        service: Service, endpoint: Endpoint) -> None:
    token = active(endpoint, "opaque-dpop-3", jkt=JKT)
    allow = allowed(service.ask(dpop(token, proof(token)), "/dpop/1"))
    assert allow.identity.subject == "alice"
    assert {"authorization", "dpop"} <= set(allow.remove_headers)


def test_a_proof_by_another_key_is_refused(service: Service, endpoint: Endpoint) -> None:
    token = active(endpoint, "opaque-dpop-4", jkt=JKT)
    answer = service.ask(dpop(token, proof(token, key=OTHER_PROOF_KEY)), "/dpop/1")
    assert dpop_refused(answer, "invalid_dpop_proof") == \
        "DPoP proof key is not the key the token is bound to"


def test_a_replayed_proof_is_refused(service: Service, endpoint: Endpoint) -> None:
    """Spent on the request that introspected the token, so its replay (answered from
    the cache) is refused."""
    token = active(endpoint, "opaque-dpop-5", jkt=JKT)
    headers = dpop(token, proof(token))
    assert isinstance(service.ask(headers, "/dpop/1").decision, Allow)
    assert dpop_refused(service.ask(headers, "/dpop/1"), "invalid_dpop_proof") == \
        "DPoP proof already used"
    assert endpoint.calls_for(token) == 1


@pytest.mark.parametrize("ath", ["wrong", "missing"])
def test_a_proof_for_another_access_token_is_refused(
        service: Service, endpoint: Endpoint, ath: str) -> None:
    token = active(endpoint, f"opaque-dpop-ath-{ath}", jkt=JKT)
    made = proof(None) if ath == "missing" else proof(None, ath=dpop_kit.ath(token) + "x")
    assert dpop_refused(service.ask(dpop(token, made), "/dpop/1"), "invalid_dpop_proof") == \
        "DPoP proof is for another access token ('ath')"


def test_a_proof_made_for_another_token_of_the_same_key_is_refused(
        service: Service, endpoint: Endpoint) -> None:
    mine = active(endpoint, "opaque-dpop-6", jkt=JKT)
    other = active(endpoint, "opaque-dpop-7", jkt=JKT)
    assert dpop_refused(service.ask(dpop(mine, proof(other)), "/dpop/1"),
                        "invalid_dpop_proof") == "DPoP proof is for another access token ('ath')"


def test_a_cached_dpop_token_still_needs_a_fresh_proof_each_time(
        service: Service, endpoint: Endpoint) -> None:
    token = active(endpoint, "opaque-dpop-8", jkt=JKT)
    assert isinstance(service.ask(dpop(token, proof(token)), "/dpop/1").decision, Allow)
    assert dpop_refused(service.ask({"authorization": f"DPoP {token}"}, "/dpop/1"),
                        "invalid_dpop_proof") == "missing DPoP proof"
    assert dpop_refused(service.ask(bearer(token), "/dpop/1"), "invalid_token") == \
        "DPoP-bound token sent as a bearer token"
    assert isinstance(service.ask(dpop(token, proof(token)), "/dpop/1").decision, Allow)
    assert endpoint.calls_for(token) == 1


def test_an_unbound_token_under_the_dpop_scheme_is_refused(
        service: Service, endpoint: Endpoint) -> None:
    token = active(endpoint, "opaque-plain-3")
    assert dpop_refused(service.ask(dpop(token, proof(token)), "/dpop/1"), "invalid_token") \
        == "token is not DPoP-bound"
    assert isinstance(service.ask(bearer(token), "/dpop/1").decision, Allow)  # dpop: allow


def test_dpop_require_refuses_an_unbound_token(service: Service, endpoint: Endpoint) -> None:
    token = active(endpoint, "opaque-plain-4")
    assert dpop_refused(service.ask(bearer(token), "/strict/1"), "invalid_token") == \
        "token is not DPoP-bound"
    bound = active(endpoint, "opaque-dpop-9", jkt=JKT)
    made = proof(bound, "/strict/1")
    assert isinstance(service.ask(dpop(bound, made), "/strict/1").decision, Allow)


def test_no_credentials_on_a_dpop_route_offers_both_schemes(service: Service) -> None:
    assert denied(service.ask({}, "/dpop/1")).challenge == (
        'Bearer realm="tollgate", DPoP realm="tollgate", algs="ES256 EdDSA RS256 PS256"')
    assert denied(service.ask({})).challenge == 'Bearer realm="tollgate"'


def test_a_token_bound_both_ways_needs_its_certificate_and_a_proof(
        service: Service, endpoint: Endpoint) -> None:
    token = active(endpoint, "opaque-both", jkt=JKT, **{"x5t#S256": jwt_kit.b64(CERT_A)})
    assert isinstance(service.ask(dpop(token, proof(token)), "/dpop/1", **peer(CERT_A)).decision,
                      Allow)
    assert invalid_token(service.ask(dpop(token, proof(token)), "/dpop/1", **peer(CERT_B))) == \
        "token is bound to another client certificate"
    assert dpop_refused(service.ask(bearer(token), "/dpop/1", **peer(CERT_A)),
                        "invalid_token") == "DPoP-bound token sent as a bearer token"


def test_a_shadow_route_still_spends_the_proof_of_a_caller_it_lets_through(
        tmp_path: Path, endpoint: Endpoint) -> None:
    """As for JWTs: the proof is spent whether or not the policy permits."""
    text = config_text(endpoint.url, {"dpop": {"dpop": "allow"}}, shadow="true",
                       require="{scopes: {all_of: [orders:admin]}}")
    shadow = Service(tmp_path, text)
    try:
        token = active(endpoint, "opaque-dpop-10", jkt=JKT)
        headers = dpop(token, proof(token))
        first = shadow.ask(headers, "/dpop/1")
        assert isinstance(first.decision, Allow)
        assert first.shadowed is not None and first.shadowed.code == "insufficient_scope"
        assert dpop_refused(shadow.ask(headers, "/dpop/1"), "invalid_dpop_proof") == \
            "DPoP proof already used"
    finally:
        shadow.close()


def test_concurrent_checks_of_a_new_token_with_one_proof_spend_it_once(
        service: Service, endpoint: Endpoint) -> None:
    """Two requests with the same proof wait on the same introspection: one is allowed,
    the other is the replay."""
    token = active(endpoint, "opaque-dpop-11", jkt=JKT)
    headers = dpop(token, proof(token))
    ctx = RequestContext("GET", "/dpop/1", HOST, headers=headers)

    async def both() -> list[Answer]:
        return list(await asyncio.gather(service.pipeline.decide(ctx),
                                         service.pipeline.decide(ctx)))

    answers = service.loop.run_until_complete(both())
    codes = sorted("ok" if isinstance(a.decision, Allow) else a.decision.code for a in answers)
    assert codes == ["invalid_dpop_proof", "ok"]
    assert endpoint.calls_for(token) == 1


# --- the settings and the verdict -----------------------------------------------------


def test_introspection_sources_take_the_jwt_sources_binding_settings_and_defaults() -> None:
    def described(model: type[BaseModel], name: str) -> tuple[Any, ...]:
        field = model.model_fields[name]
        return field.annotation, field.get_default(call_default_factory=True)

    for name in BindingSettings.model_fields:
        assert described(IntrospectionSource, name) == described(JwtSource, name) == \
            described(BindingSettings, name)
    defaults = BindingSettings()
    assert (defaults.certificate_binding, defaults.dpop) == ("when_present", "off")


def test_dpop_off_unquoted_in_yaml_means_off(tmp_path: Path, endpoint: Endpoint) -> None:
    keys, pipeline = service_pipeline(tmp_path, config_text(endpoint.url,
                                                            {"orders": {"dpop": "off"}}))
    kind, source = pipeline.holder.current.config.identities[0].mechanism()
    assert (kind, source.dpop) == ("introspection", "off")
    asyncio.run(keys.close())


def test_the_verdict_keeps_the_answers_binding_for_every_later_request() -> None:
    config = IntrospectionSource.model_validate({
        "endpoint": "http://127.0.0.1/introspect", "audiences": "any",
        "client": {"method": "client_secret_basic", "client_id": "c",
                   "client_secret_env": SECRET_ENV}})
    now = time.time()
    answer = {"active": True, "sub": "alice", "cnf": {"x5t#S256": jwt_kit.b64(CERT_A),
                                                      "jkt": JKT}}
    verdict = judge(answer, config, ClaimMapping("introspection", "o", config, frozenset()), now)
    assert verdict.binding == TokenBinding(jwt_kit.b64(CERT_A), JKT)
    plain = judge({"active": True, "sub": "alice"}, config,
                  ClaimMapping("introspection", "o", config, frozenset()), now)
    assert plain.identity is not None and plain.binding is None

