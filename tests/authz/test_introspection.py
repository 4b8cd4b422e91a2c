"""Opaque tokens judged by a real local RFC 7662 endpoint: what an answer proves, what is
cached and for how long, how the service authenticates itself, and that an endpoint
that is down, slow or answering garbage is a 503 `introspection_unavailable`, never an
allow. The pipeline runs in this process (asyncio.run) with the service's HTTP client."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

import jwt as pyjwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from authz_service.config import AuthzConfig
from authz_service.identity.claim_mapping import ClaimMapping
from authz_service.identity.introspection import (
    IntrospectionCache,
    IntrospectionSource,
    InvalidAnswer,
    Verdict,
    judge,
)
from authz_service.keys.registry import KeyRegistry
from authz_service.metrics import INTROSPECTIONS
from authz_service.models import Allow, Answer, Deny, Identity, RequestContext
from authz_service.policy import engine
from authz_service.policy.compiled import CompiledPolicy, compile_config
from authz_service.policy.loading import load_policy, watched_files
from tests.kits import jwt_kit
from tests.kits.introspection_kit import Endpoint, introspection_endpoint, service_pipeline
from tollgate.config import ConfigError

SECRET_ENV = "TG_TEST_INTROSPECTION_SECRET"
SECRET = "s3cr3t:with+odd chars"
ISSUER = "https://as.test"
AUDIENCE = "orders-api"


def client_block(method: str = "client_secret_basic", **extra: str) -> str:
    fields = {"method": method, "client_id": "tollgate authz", **extra}
    if method != "private_key_jwt" and "client_secret_file" not in extra:
        fields["client_secret_env"] = SECRET_ENV
    return "{" + ", ".join(f"{k}: {v!r}" for k, v in fields.items()) + "}"


def config_text(url: str, client: str | None = None, **source: Any) -> str:
    settings = {"wait_seconds": 0.3, "timeout_seconds": 2, **source}
    lines = "\n".join(f"      {k}: {v}" for k, v in settings.items())
    return f"""
identities:
  - name: opaque
    introspection:
      endpoint: {url}
      client: {client or client_block()}
      issuers: [{ISSUER}]
      audiences: [{AUDIENCE}]
{lines}
routes:
  - name: orders-read
    match: {{methods: [GET], path: {{template: "/orders/{{id}}"}}}}
    require: {{scopes: {{all_of: ["orders:read"]}}}}
"""


@pytest.fixture(autouse=True)
def secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SECRET_ENV, SECRET)


@pytest.fixture
def endpoint() -> Iterator[Endpoint]:
    with introspection_endpoint() as server:
        yield server


def request(token: str) -> RequestContext:
    return RequestContext("GET", "/orders/1", headers={"authorization": f"Bearer {token}"})


class Service:
    """The service's pipeline on a config file, its HTTP client closed at the end."""

    def __init__(self, workdir: Path, text: str) -> None:
        self.keys, self.pipeline = service_pipeline(workdir, text)

    def ask(self, *tokens: str) -> list[Answer]:
        """Decide one request per token, all at once, in one event loop."""

        async def main() -> list[Answer]:
            try:
                return list(await asyncio.gather(
                    *(self.pipeline.decide(request(t)) for t in tokens)))
            finally:
                await self.keys.close()

        return asyncio.run(main())

    def one(self, token: str) -> Answer:
        return self.ask(token)[0]


def outcome(answer: Answer) -> tuple[int, str]:
    decision = answer.decision
    return (decision.status, decision.code) if isinstance(decision, Deny) else (200, "ok")


def metric(result: str) -> float:
    return INTROSPECTIONS.labels("opaque", result)._value.get()


def active(endpoint: Endpoint, token: str, **claims: Any) -> None:
    endpoint.active(token, **{"iss": ISSUER, "aud": AUDIENCE, **claims})


# --- what an answer proves ----------------------------------------------------------


def test_an_active_token_is_allowed_with_the_identity_the_answer_names(
    tmp_path: Path, endpoint: Endpoint
) -> None:
    active(endpoint, "opaque-1", sub="alice", scope="orders:read orders:write", plan="gold",
           roles=["admin"])
    answer = Service(tmp_path, config_text(endpoint.url)).one("opaque-1")
    assert outcome(answer) == (200, "ok")
    identity = answer.identity
    assert isinstance(identity, Identity)
    assert (identity.kind, identity.subject, identity.source, identity.issuer, identity.plan) == (
        "introspection", "alice", "opaque", ISSUER, "gold")
    assert identity.scopes == {"orders:read", "orders:write"}
    assert identity.claims["roles"] == ["admin"]
    assert endpoint.last().form["token_type_hint"] == "access_token"


@pytest.mark.parametrize(("claims", "why"), [
    ({"active": False}, "token is not active"),
    ({"exp": 1_000_000}, "token expired"),
    ({"iss": "https://evil.test"}, "issuer not accepted"),
    ({"aud": ["another-api"]}, "audience not accepted"),
    ({"sub": ""}, "missing required claim 'sub'"),
])
def test_a_refused_answer_is_401_invalid_token(
    tmp_path: Path, endpoint: Endpoint, claims: dict[str, Any], why: str
) -> None:
    active(endpoint, "opaque-2", **claims)
    answer = Service(tmp_path, config_text(endpoint.url)).one("opaque-2")
    assert outcome(answer) == (401, "invalid_token")
    assert isinstance(answer.decision, Deny)
    assert answer.decision.description == why
    assert answer.identity is None


def test_an_active_token_without_the_scope_is_403(tmp_path: Path, endpoint: Endpoint) -> None:
    active(endpoint, "opaque-3", scope="profile")
    answer = Service(tmp_path, config_text(endpoint.url)).one("opaque-3")
    assert outcome(answer) == (403, "insufficient_scope")


def mapping(config: IntrospectionSource) -> ClaimMapping:
    return ClaimMapping("introspection", "opaque", config, frozenset())


def source_config(**fields: Any) -> IntrospectionSource:
    fields.setdefault("endpoint", "http://127.0.0.1:1/introspect")
    fields.setdefault("audiences", "any")
    fields.setdefault("client", {"method": "client_secret_post", "client_id": "c",
                                 "client_secret_env": SECRET_ENV})
    return IntrospectionSource.model_validate(fields)


@pytest.mark.parametrize("answer", [
    {}, {"active": "true"}, {"active": 1}, {"active": True, "exp": "soon"},
    {"active": True, "exp": True},
])
def test_an_answer_that_is_not_rfc_7662_is_invalid(answer: dict[str, Any]) -> None:
    config = source_config()
    with pytest.raises(InvalidAnswer):
        judge(answer, config, mapping(config), 1000.0)


def test_a_yes_is_cached_for_the_ttl_and_never_past_exp() -> None:
    config = source_config(cache={"ttl_seconds": 60})
    short = judge({"active": True, "sub": "a", "exp": 1010}, config, mapping(config), 1000.0)
    long = judge({"active": True, "sub": "a", "exp": 99_999}, config, mapping(config), 1000.0)
    no_exp = judge({"active": True, "sub": "a"}, config, mapping(config), 1000.0)
    assert (short.cached_until, long.cached_until, no_exp.cached_until) == (1010, 1060, 1060)


def test_a_cached_yes_past_its_exp_is_token_expired_without_asking_again() -> None:
    cache = IntrospectionCache(10)
    identity = Identity("introspection", "a", "opaque")
    cache.put(b"k", Verdict(identity, "", 1010.0, 1010.0))
    assert cache.get(b"k", 1009.0) is not None
    expired = cache.get(b"k", 1010.0)
    assert expired is not None
    assert (expired.identity, expired.refusal) == (None, "token expired")
    assert cache.get(b"k", 1010.0) is None  # dropped


def test_the_cache_is_bounded_least_recently_used_first() -> None:
    cache = IntrospectionCache(2)
    for key in (b"a", b"b"):
        cache.put(key, Verdict(None, "no", 2000.0, float("inf")))
    assert cache.get(b"a", 1000.0) is not None  # a is now the most recent
    cache.put(b"c", Verdict(None, "no", 2000.0, float("inf")))
    assert (cache.get(b"b", 1000.0), len(cache)) == (None, 2)


# --- caching through the pipeline ---------------------------------------------------


def test_a_cached_yes_asks_the_endpoint_once(tmp_path: Path, endpoint: Endpoint) -> None:
    active(endpoint, "opaque-4")
    service = Service(tmp_path, config_text(endpoint.url))

    async def main() -> list[Answer]:
        try:
            return [await service.pipeline.decide(request("opaque-4")) for _ in range(5)]
        finally:
            await service.keys.close()

    answers = asyncio.run(main())
    assert [outcome(a) for a in answers] == [(200, "ok")] * 5
    assert endpoint.calls_for("opaque-4") == 1


def test_a_no_is_remembered_for_the_negative_ttl_then_asked_again(
    tmp_path: Path, endpoint: Endpoint
) -> None:
    service = Service(tmp_path, config_text(endpoint.url, cache="{negative_ttl_seconds: 0.5}"))

    async def main() -> list[tuple[int, str]]:
        try:
            first = [outcome(await service.pipeline.decide(request("unknown"))) for _ in range(3)]
            calls_within_ttl = endpoint.calls_for("unknown")
            deadline = time.monotonic() + 5
            while endpoint.calls_for("unknown") == calls_within_ttl:
                # After the negative TTL the next request asks again (polled, bounded).
                assert time.monotonic() < deadline, "the negative entry never expired"
                first.append(outcome(await service.pipeline.decide(request("unknown"))))
                await asyncio.sleep(0.05)
            assert calls_within_ttl == 1
            return first
        finally:
            await service.keys.close()

    assert set(asyncio.run(main())) == {(401, "invalid_token")}
    assert endpoint.calls_for("unknown") == 2


def test_concurrent_identical_tokens_make_one_introspection(
    tmp_path: Path, endpoint: Endpoint
) -> None:
    active(endpoint, "opaque-5")
    endpoint.delay = 0.15  # long enough for all 50 to be waiting on the same call
    answers = Service(tmp_path, config_text(endpoint.url, wait_seconds=3)).ask(
        *["opaque-5"] * 50)
    assert [outcome(a) for a in answers] == [(200, "ok")] * 50
    assert endpoint.calls() == 1


def test_past_max_concurrent_a_new_token_is_refused_at_once(
    tmp_path: Path, endpoint: Endpoint
) -> None:
    for token in ("t1", "t2", "t3"):
        active(endpoint, token)
    endpoint.delay = 0.3
    before = metric("overloaded")
    answers = Service(tmp_path, config_text(endpoint.url, wait_seconds=3, max_concurrent=2)).ask(
        "t1", "t2", "t3")
    assert [outcome(a) for a in answers] == [(200, "ok"), (200, "ok"),
                                             (503, "introspection_unavailable")]
    assert (endpoint.calls(), metric("overloaded") - before) == (2, 1)


# --- the endpoint failing -----------------------------------------------------------


def test_a_hung_endpoint_is_503_within_the_wait_and_never_an_allow(
    tmp_path: Path, endpoint: Endpoint
) -> None:
    active(endpoint, "opaque-6")
    endpoint.delay = 30  # hangs (released at teardown)
    before = metric("wait_expired")
    service = Service(tmp_path, config_text(endpoint.url, wait_seconds=0.2, timeout_seconds=5))
    started = time.monotonic()
    answer = service.one("opaque-6")
    elapsed = time.monotonic() - started
    assert outcome(answer) == (503, "introspection_unavailable")
    assert isinstance(answer.decision, Deny)
    assert answer.decision.challenge is None  # not the client's fault: no challenge
    assert ("retry-after", "1") in answer.decision.headers
    assert elapsed < 1.5  # the wait (0.2 s) bounds the answer, not the endpoint
    assert metric("wait_expired") - before == 1


def test_the_exchange_deadline_counts_a_timeout(tmp_path: Path, endpoint: Endpoint) -> None:
    active(endpoint, "opaque-7")
    endpoint.delay = 30
    before = metric("timeout")
    service = Service(tmp_path, config_text(endpoint.url, wait_seconds=2, timeout_seconds=0.2))
    assert outcome(service.one("opaque-7")) == (503, "introspection_unavailable")
    assert metric("timeout") - before == 1


@pytest.mark.parametrize(("status", "raw", "result"), [
    (500, None, "http_error"),
    (401, None, "http_error"),  # our client credentials refused
    (200, b"<html>oops</html>", "invalid_response"),
    (200, b"[true]", "invalid_response"),
    (200, b'{"active": false, "active": true}', "invalid_response"),
    (200, b'{"sub": "alice"}', "invalid_response"),
    (200, b'{"active": true, "sub": "alice", "exp": NaN}', "invalid_response"),
    (200, b'{"active": true, "sub": "a", "pad": "' + b"x" * 70_000 + b'"}', "too_large"),
])
def test_an_endpoint_answering_garbage_is_503_and_not_cached(
    tmp_path: Path, endpoint: Endpoint, status: int, raw: bytes | None, result: str
) -> None:
    active(endpoint, "opaque-8")
    endpoint.status, endpoint.raw = status, raw
    before = metric(result)
    service = Service(tmp_path, config_text(endpoint.url))

    async def main() -> list[tuple[int, str]]:
        try:
            return [outcome(await service.pipeline.decide(request("opaque-8"))) for _ in range(2)]
        finally:
            await service.keys.close()

    assert asyncio.run(main()) == [(503, "introspection_unavailable")] * 2
    assert endpoint.calls() == 2  # a failure is not remembered: the next request asks
    assert metric(result) - before == 2


def test_an_endpoint_that_refuses_connections_is_503(tmp_path: Path) -> None:
    with introspection_endpoint() as closed:
        url = closed.url
    answer = Service(tmp_path, config_text(url)).one("opaque-9")
    assert outcome(answer) == (503, "introspection_unavailable")


def test_neither_the_token_nor_the_secret_is_logged(
    tmp_path: Path, endpoint: Endpoint, caplog: pytest.LogCaptureFixture
) -> None:
    endpoint.status = 500
    caplog.set_level(logging.DEBUG)
    token = "opaque-secret-token-0123456789"
    Service(tmp_path, config_text(endpoint.url)).one(token)
    assert "introspection failed" in caplog.text
    assert token not in caplog.text
    assert SECRET not in caplog.text


# --- client authentication, as the endpoint sees it ---------------------------------


def test_client_secret_basic_sends_the_form_encoded_pair(
    tmp_path: Path, endpoint: Endpoint
) -> None:
    Service(tmp_path, config_text(endpoint.url, client_block("client_secret_basic"))).one("x")
    seen = endpoint.last()
    scheme, _, encoded = seen.headers["authorization"].partition(" ")
    user, _, password = base64.b64decode(encoded).decode().partition(":")
    assert (scheme, unquote_plus(user), unquote_plus(password)) == (
        "Basic", "tollgate authz", SECRET)  # RFC 6749 §2.3.1: form-encoded, then Basic
    assert "client_secret" not in seen.form
    assert seen.form["token"] == "x"


def test_client_secret_post_sends_the_pair_in_the_form(
    tmp_path: Path, endpoint: Endpoint
) -> None:
    Service(tmp_path, config_text(endpoint.url, client_block("client_secret_post"))).one("x")
    seen = endpoint.last()
    assert (seen.form["client_id"], seen.form["client_secret"]) == ("tollgate authz", SECRET)
    assert "authorization" not in seen.headers


def test_client_secret_file_is_read_relative_to_the_config(
    tmp_path: Path, endpoint: Endpoint
) -> None:
    (tmp_path / "secret.txt").write_text("from-a-file\n")
    client = client_block("client_secret_post", client_secret_file="secret.txt")
    Service(tmp_path, config_text(endpoint.url, client)).one("x")
    assert endpoint.last().form["client_secret"] == "from-a-file"


def write_key(path: Path, key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))


@pytest.mark.parametrize("alg", ["RS256", "PS256", "ES256"])
def test_private_key_jwt_sends_a_fresh_assertion_signed_with_the_key(
    tmp_path: Path, endpoint: Endpoint, alg: str
) -> None:
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey = (
        ec.generate_private_key(ec.SECP256R1()) if alg == "ES256"
        else rsa.generate_private_key(public_exponent=65537, key_size=2048))
    write_key(tmp_path / "client.pem", key)
    client = client_block("private_key_jwt", private_key_file="client.pem", algorithm=alg,
                          key_id="k1")
    Service(tmp_path, config_text(endpoint.url, client)).ask("x", "y")
    first, second = endpoint.seen
    assertions = []
    for seen in (first, second):
        form = seen.form
        assert form["client_assertion_type"] == (
            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
        assert "client_secret" not in form and "authorization" not in seen.headers
        assertion = form["client_assertion"]
        assert pyjwt.get_unverified_header(assertion) == {"alg": alg, "kid": "k1", "typ": "JWT"}
        claims = pyjwt.decode(assertion, key.public_key(), algorithms=[alg],
                              audience=endpoint.url, issuer="tollgate authz")
        assert claims["sub"] == "tollgate authz"
        assert 0 < claims["exp"] - claims["iat"] <= 60
        assertions.append(claims["jti"])
    assert assertions[0] != assertions[1]  # a fresh jti per request (RFC 7523 §3)


# --- settings refused at load -------------------------------------------------------


def load_error(tmp_path: Path, text: str) -> str:
    path = tmp_path / "authz.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_policy(path, KeyRegistry())
    return str(caught.value)


@pytest.mark.parametrize(("client", "message"), [
    ("{method: private_key_jwt, client_id: c}", "private_key_jwt needs 'private_key_file'"),
    ("{method: client_secret_basic, client_id: c}",
     "client_secret_basic needs exactly one of 'client_secret_env' or 'client_secret_file'"),
    ("{method: private_key_jwt, client_id: c, private_key_file: k.pem, algorithm: HS256}",
     "algorithm 'HS256' is not allowed for private_key_jwt"),
    ("{method: private_key_jwt, client_id: c, private_key_file: k.pem, algorithm: none}",
     "algorithm 'none' is not allowed for private_key_jwt"),
    ("{method: mtls, client_id: c}",
     "must be 'client_secret_basic', 'client_secret_post' or 'private_key_jwt'"),
    ("{method: client_secret_post, client_id: c, client_secret_env: TG_UNSET_VAR_X}",
     "$TG_UNSET_VAR_X (the client secret) is unset or empty"),
    ("{method: private_key_jwt, client_id: c, private_key_file: missing.pem}",
     "cannot read the private key file"),
])
def test_unusable_client_settings_are_refused(tmp_path: Path, client: str, message: str) -> None:
    assert message in load_error(tmp_path, config_text("http://127.0.0.1:1/i", client))


def test_a_key_of_the_wrong_type_for_the_algorithm_is_refused(tmp_path: Path) -> None:
    write_key(tmp_path / "ec.pem", ec.generate_private_key(ec.SECP256R1()))
    client = "{method: private_key_jwt, client_id: c, private_key_file: ec.pem, algorithm: RS256}"
    assert "RS256 needs an RSA key of at least 2048 bits" in load_error(
        tmp_path, config_text("http://127.0.0.1:1/i", client))


def test_an_http_endpoint_off_loopback_is_refused(tmp_path: Path) -> None:
    assert "http is only allowed to loopback" in load_error(
        tmp_path, config_text("http://as.example.com/introspect"))


def test_the_secret_is_not_in_the_config_model() -> None:
    config = AuthzConfig.model_validate({
        "identities": [{"name": "opaque", "introspection": {
            "endpoint": "https://as.test/i", "audiences": "any",
            "client": {"method": "client_secret_basic", "client_id": "c",
                       "client_secret_env": SECRET_ENV}}}],
        "no_routes": True,
    })
    assert SECRET not in config.model_dump_json()


# --- the pure engine: a cache miss is a lookup to await, never a wait -----------------


class CannedIntrospector:
    """The I/O side replaced for the pure engine: records what it would have asked."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    async def settle(self, token: str, digest: bytes, record: Any) -> None:
        self.asked.append(token)
        record({"active": True, "sub": "alice", "scope": "orders:read"})


def engine_policy(jwks: Path | None = None) -> tuple[CompiledPolicy, CannedIntrospector]:
    canned = CannedIntrospector()
    identities: list[dict[str, Any]] = [{"name": "opaque", "introspection": {
        "endpoint": "https://as.test/introspect", "audiences": "any",
        "client": {"method": "client_secret_post", "client_id": "c",
                   "client_secret_env": SECRET_ENV}}}]
    if jwks is not None:
        identities.insert(0, {"name": "idp", "jwt": {
            "issuer": jwt_kit.ISSUER, "audiences": [jwt_kit.AUDIENCE], "jwks_file": str(jwks)}})
    config = AuthzConfig.model_validate({"identities": identities, "routes": [
        {"name": "orders-read", "match": {"path": {"prefix": "/orders"}},
         "require": {"scopes": {"all_of": ["orders:read"]}}}]})
    keys = KeyRegistry()
    policy = compile_config(config, keys.factory(Path.cwd()), Path.cwd(),
                            lambda name, source, base: canned)
    return policy, canned


def test_a_cache_miss_is_a_lookup_for_the_caller_with_a_503_fallback() -> None:
    policy, canned = engine_policy()
    outcome_ = engine.decide(policy, request("opaque-e1"), time.time())
    assert isinstance(outcome_, engine.NeedLookup)
    assert (outcome_.fallback.status, outcome_.fallback.code) == (503, "introspection_unavailable")
    assert canned.asked == []  # the engine never performs the lookup itself
    denied = engine.decide(policy, request("opaque-e1"), time.time(), may_refetch=False)
    assert isinstance(denied, Deny) and denied.code == "introspection_unavailable"
    asyncio.run(outcome_.lookups[0]())
    assert canned.asked == ["opaque-e1"]
    allowed = engine.decide(policy, request("opaque-e1"), time.time())
    assert isinstance(allowed, Allow) and allowed.identity.subject == "alice"


def test_a_malformed_credential_is_400_with_no_lookup() -> None:
    policy, _ = engine_policy()
    denied = engine.decide(policy, RequestContext(
        "GET", "/orders/1", headers={"authorization": "Bearer "}), time.time())
    assert isinstance(denied, Deny) and (denied.status, denied.code) == (400, "invalid_request")


def test_a_source_earlier_in_the_route_that_proves_the_caller_needs_no_lookup(
    tmp_path: Path,
) -> None:
    key = jwt_kit.rsa_key()
    (tmp_path / "jwks.json").write_text(json.dumps(jwt_kit.jwks(key)))
    policy, canned = engine_policy(tmp_path / "jwks.json")
    token = jwt_kit.mint(key, scope="orders:read")
    allowed = engine.decide(policy, request(token), time.time())
    assert isinstance(allowed, Allow) and allowed.identity.kind == "jwt"
    # An opaque token: the JWT source refuses it, the introspection source is asked.
    assert isinstance(engine.decide(policy, request("opaque-e2"), time.time()), engine.NeedLookup)
    assert canned.asked == []


_values = st.one_of(st.none(), st.booleans(), st.integers(-10, 3000), st.floats(allow_nan=True),
                    st.text(max_size=5), st.lists(st.text(max_size=5), max_size=3))


@example({"active": True, "exp": float("nan"), "sub": "s", "iss": "i", "aud": "a"})
@example({"active": True, "exp": float("inf"), "sub": "s", "iss": "i", "aud": ["a"]})
@settings(suppress_health_check=[HealthCheck.too_slow])  # a loaded machine draws slowly
@given(st.dictionaries(st.sampled_from(["active", "exp", "sub", "iss", "aud", "scope", "x"]),
                       _values, max_size=7))
def test_no_answer_is_a_yes_unless_active_is_true_unexpired_and_accepted(
    answer: dict[str, Any],
) -> None:
    config = source_config(issuers=["i"], audiences=["a"])
    try:
        verdict = judge(answer, config, mapping(config), 1000.0)
    except InvalidAnswer:
        return
    if verdict.identity is not None:
        exp = answer.get("exp")
        aud = answer.get("aud")
        assert answer["active"] is True
        assert exp is None or exp > 1000.0
        assert answer.get("iss") == "i"
        assert aud == "a" or (isinstance(aud, list) and "a" in aud)
        assert isinstance(answer.get("sub"), str) and answer["sub"]
        assert verdict.cached_until <= (exp if exp is not None else float("inf"))


def test_a_reload_reads_a_rotated_client_secret_file(tmp_path: Path, endpoint: Endpoint) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("first-secret")
    text = config_text(endpoint.url, client_block("client_secret_post",
                                                  client_secret_file="secret.txt"))
    first = Service(tmp_path, text)
    # The watcher reloads the policy when the secret file changes, as when the policy does.
    assert watched_files(first.pipeline.holder.current) == (secret,)
    first.one("x")
    secret.write_text("rotated-secret")  # a Kubernetes Secret update; then the reload
    Service(tmp_path, text).one("x")
    assert [s.form["client_secret"] for s in endpoint.seen] == ["first-secret", "rotated-secret"]
