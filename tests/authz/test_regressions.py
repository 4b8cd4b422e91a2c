"""Regressions found after the main suites were written, each pinned by a test."""

from __future__ import annotations

import json
from pathlib import Path
from types import MappingProxyType

from authz_service.config import AuthzConfig
from authz_service.keys.keyset import KeySet, parse_jwks
from authz_service.models import Allow, Deny, RequestContext
from authz_service.policy.compiled import compile_config
from authz_service.policy.engine import decide
from tests.authz import jwt_kit

T0 = 1_800_000_000.0


class StaticKeys:
    def __init__(self, keys: KeySet) -> None:
        self.key_set = keys
        self.generation = 1


def test_roles_come_from_the_configured_claim_and_only_read_claims_are_kept() -> None:
    # roles_claim was never mapped to the 'roles' the requirements read; and cached
    # identities kept every claim (~2 KB per cache entry).
    key = jwt_kit.rsa_key("k1")
    keys = StaticKeys(parse_jwks(json.dumps(jwt_kit.jwks(key))))
    config = AuthzConfig.model_validate({
        "identities": [{"name": "idp", "jwt": {
            "issuer": jwt_kit.ISSUER, "jwks_uri": "https://idp.test/jwks", "roles_claim": "groups",
            "audiences": "any",
        }}],
        "routes": [{"name": "r", "require": {"roles": {"all_of": ["ops"]},
                                             "claims": {"tenant": "acme"}}}],
    })
    policy = compile_config(config, lambda name, source: keys)
    claims = {"iat": int(T0), "nbf": int(T0), "exp": int(T0) + 300, "tenant": "acme",
              "groups": "ops dev", "ssn": "not-needed"}

    def ask(token: str) -> Allow | Deny:
        ctx = RequestContext("GET", "/x", headers=MappingProxyType(
            {"authorization": f"Bearer {token}"}))
        outcome = decide(policy, ctx, T0)
        assert isinstance(outcome, Allow | Deny)
        return outcome

    allowed = ask(jwt_kit.mint(key, **claims))
    assert isinstance(allowed, Allow)
    assert dict(allowed.identity.claims) == {"tenant": "acme", "roles": ["ops", "dev"]}
    denied = ask(jwt_kit.mint(key, **{**claims, "groups": "dev"}))
    assert isinstance(denied, Deny)
    assert (denied.code, denied.description) == ("access_denied", "required role missing")


def test_a_jwks_without_kids_verifies_tokens_naming_a_kid() -> None:
    # Keys without a kid (shared secrets, JWKS that omit kids) are candidates for any token.
    jwk = jwt_kit.rsa_key("k").public_jwk()
    del jwk["kid"]
    keys = parse_jwks(json.dumps({"keys": [jwk]}))
    assert keys.candidates("whatever", "RS256") == keys.keys


def test_non_ascii_claims_reach_neither_headers_nor_metadata() -> None:
    # Plan and tenant become rate-limit descriptors: only printable ASCII passes.
    key = jwt_kit.rsa_key("k1")
    keys = StaticKeys(parse_jwks(json.dumps(jwt_kit.jwks(key))))
    config = AuthzConfig.model_validate({
        "identities": [{"name": "idp", "jwt": {
            "issuer": jwt_kit.ISSUER, "jwks_uri": "https://idp.test/jwks", "audiences": "any"}}],
        "routes": [{"name": "r"}],
        "upstream": {"claims": {"email": "x-user-email"}},
    })
    policy = compile_config(config, lambda name, source: keys)
    token = jwt_kit.mint(key, iat=int(T0), nbf=int(T0), exp=int(T0) + 300,
                         plan="gold\u0085", tenant="ac\u200bme", email="a\u00e9@x.test")
    ctx = RequestContext("GET", "/x", headers=MappingProxyType(
        {"authorization": f"Bearer {token}"}))
    outcome = decide(policy, ctx, T0)
    assert isinstance(outcome, Allow)
    assert "plan" not in outcome.metadata and "tenant" not in outcome.metadata
    names = {name for name, _ in outcome.headers}
    assert not names & {"x-tollgate-plan", "x-tollgate-tenant", "x-user-email"}
    assert {"x-tollgate-plan", "x-tollgate-tenant", "x-user-email"} <= set(outcome.remove_headers)


def test_an_unchanged_jwks_refresh_keeps_the_generation() -> None:
    # The verified-token cache is tied to the key-set generation: bumping it on every
    # refresh emptied the cache every TTL even when the IdP's keys had not changed.
    import asyncio

    import httpx

    from authz_service.identity.jwt import JwtSource
    from authz_service.keys.jwks import RemoteJwks
    from tests.authz.http_kit import serve_http

    with serve_http() as idp:
        idp.set_json("/keys", jwt_kit.jwks(jwt_kit.rsa_key("k1")))
        source = JwtSource.model_validate(
            {"issuer": "https://idp.test", "jwks_uri": f"{idp.base_url}/keys", "audiences": "any"}
        )

        async def scenario() -> list[int]:
            async with httpx.AsyncClient() as client:
                jwks = RemoteJwks("idp", source, client)
                generations = []
                for _ in range(2):
                    assert await jwks.refresh()
                    generations.append(jwks.generation)
                idp.set_json("/keys", jwt_kit.jwks(jwt_kit.rsa_key("k2")))
                assert await jwks.refresh()
                generations.append(jwks.generation)
                return generations

        assert asyncio.run(scenario()) == [1, 1, 2]


def test_a_slow_idp_costs_one_prompt_401_not_an_envoy_timeout(tmp_path: Path) -> None:
    # A Check used to wait the whole fetch timeout (3 s) for an unknown-kid refetch,
    # well past Envoy's ext_authz timeout; it now answers after unknown_kid_wait_seconds.
    import time

    from tests.authz.grpc_kit import authz_process, check_request
    from tests.authz.http_kit import Route, serve_http

    known, rotated = jwt_kit.rsa_key("k1"), jwt_kit.rsa_key("k2")
    with serve_http() as idp:
        idp.set_json("/keys", jwt_kit.jwks(known))
        config = tmp_path / "authz.yaml"
        config.write_text(f"""
identities:
  - name: idp
    jwt: {{issuer: {jwt_kit.ISSUER}, jwks_uri: {idp.base_url}/keys, audiences: any,
           refresh: {{unknown_kid_cooldown_seconds: 0, timeout_seconds: 5}}}}
routes:
  - name: all
""")
        with authz_process(config, tmp_path) as (_, client):
            token = jwt_kit.mint(known)
            assert client.check(check_request(headers={"authorization": f"Bearer {token}"})
                                ).allowed
            idp.set_route("/keys", Route(body=json.dumps(jwt_kit.jwks(rotated)).encode(),
                                         delay=4))
            started = time.monotonic()
            answer = client.check(check_request(
                headers={"authorization": f"Bearer {jwt_kit.mint(rotated)}"}))
            elapsed = time.monotonic() - started
            assert (answer.status, answer.body["error_description"]) == (401, "unknown key id")
            assert elapsed < 2.0, elapsed  # 0.4 s wait, far below the IdP's 4 s


def test_a_cached_token_reuses_its_answer_within_one_policy_only() -> None:
    from authz_service.doors.grpc_wire import AnswerEncoder
    from authz_service.models import Answer

    key = jwt_kit.rsa_key("k1")
    keys = StaticKeys(parse_jwks(json.dumps(jwt_kit.jwks(key))))
    config = AuthzConfig.model_validate({
        "identities": [{"name": "idp", "jwt": {
            "issuer": jwt_kit.ISSUER, "jwks_uri": "https://idp.test/jwks", "audiences": "any"}}],
        "routes": [{"name": "a", "match": {"path": {"prefix": "/a"}}},
                   {"name": "b", "match": {"path": {"prefix": "/b"}}}],
    })
    token = jwt_kit.mint(key, iat=int(T0), nbf=int(T0), exp=int(T0) + 300, sub="alice")

    def ask(policy: object, path: str) -> Allow:
        ctx = RequestContext("GET", path, headers=MappingProxyType(
            {"authorization": f"Bearer {token}"}))
        outcome = decide(policy, ctx, T0)  # type: ignore[arg-type]
        assert isinstance(outcome, Allow)
        return outcome

    policy = compile_config(config, lambda name, source: keys)
    first, second = ask(policy, "/a/1"), ask(policy, "/a/2")
    assert first is second
    encoder = AnswerEncoder()
    assert encoder.encode(Answer(first), "") is encoder.encode(Answer(second), "")
    other_route = ask(policy, "/b")
    assert other_route is not first and other_route.route == "b"
    reloaded = compile_config(config, lambda name, source: keys)
    assert ask(reloaded, "/a/1") is not first  # a new policy, a new cache, a new answer
    assert dict(first.metadata)["subject"] == "alice"
