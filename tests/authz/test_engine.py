"""The pure pipeline with an injected clock: no gRPC, no files, no network.

A tiny in-memory KeyProvider stands in for the JWKS fetcher: this is the pure
decision code, which has no I/O to fake.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import pytest

from authz_service.compiled import CompiledPolicy, compile_config
from authz_service.config import AuthzConfig, JwtSource
from authz_service.engine import NeedKeys, decide
from authz_service.keys import KeySet, parse_jwks
from authz_service.models import Allow, Deny, RequestContext
from tests.authz import jwt_kit

T0 = 1_800_000_000.0
SKEW = 30


@dataclass
class CountingKeys:
    """A key provider that counts how often a signature check needed the keys."""

    keys: KeySet
    generation: int = 1
    reads: int = 0

    @property
    def key_set(self) -> KeySet:
        self.reads += 1
        return self.keys


@dataclass
class World:
    policy: CompiledPolicy
    keys: CountingKeys
    key: jwt_kit.SigningKey
    providers: dict[str, CountingKeys] = field(default_factory=dict)


def build(routes: list[dict[str, Any]] | None = None, **top: Any) -> World:
    key = jwt_kit.rsa_key("k1")
    keys = CountingKeys(parse_jwks(json.dumps(jwt_kit.jwks(key))))
    config = AuthzConfig.model_validate({
        "identities": [
            {"name": "idp", "jwt": {
                "issuer": jwt_kit.ISSUER, "audiences": [jwt_kit.AUDIENCE],
                "jwks_uri": "https://idp.test/jwks", "clock_skew_seconds": SKEW,
            }},
            {"name": "mesh", "mtls": {"trust_domains": ["td"], "principals": [
                {"spiffe": "spiffe://td/sa/a", "scopes": ["s"]}]}},
        ],
        "routes": routes if routes is not None else [
            {"name": "orders", "match": {"path": {"template": "/orders/{id}"}},
             "identities": ["idp"], "require": {"scopes": {"all_of": ["orders:read"]}}},
        ],
        **top,
    })

    def provider(name: str, source: JwtSource) -> CountingKeys:
        return keys

    return World(compile_config(config, provider), keys, key)


def ctx(path: str = "/orders/1", token: str | None = None, **kw: Any) -> RequestContext:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    headers.update(kw.pop("headers", {}))
    return RequestContext(method=kw.pop("method", "GET"), path=path,
                          headers=MappingProxyType(headers), **kw)


def token_at(world: World, **claims: Any) -> str:
    base = {"iat": int(T0), "nbf": int(T0), "exp": int(T0) + 300}
    base.update(claims)
    return jwt_kit.mint(world.key, **base)


def code(outcome: object) -> str:
    if isinstance(outcome, Allow):
        return "allow"
    assert isinstance(outcome, Deny)
    return f"{outcome.status} {outcome.code}: {outcome.description}"


def test_exp_skew_edge_is_exact() -> None:
    world = build(token_cache={"max_entries": 0})
    token = token_at(world)
    exp = T0 + 300
    assert code(decide(world.policy, ctx(token=token), exp + SKEW - 0.001)) == "allow"
    assert code(decide(world.policy, ctx(token=token), exp + SKEW)) == (
        "401 invalid_token: token expired"
    )


def test_nbf_skew_edge_is_exact() -> None:
    world = build(token_cache={"max_entries": 0})
    token = token_at(world, nbf=int(T0) + 100, iat=int(T0))
    assert code(decide(world.policy, ctx(token=token), T0 + 100 - SKEW)) == "allow"
    assert code(decide(world.policy, ctx(token=token), T0 + 100 - SKEW - 0.001)) == (
        "401 invalid_token: token not yet valid"
    )


def test_a_cached_token_costs_no_signature_check() -> None:
    world = build()
    token = token_at(world)
    assert code(decide(world.policy, ctx(token=token), T0)) == "allow"
    reads = world.keys.reads
    for _ in range(5):
        assert code(decide(world.policy, ctx(token=token), T0 + 1)) == "allow"
    assert world.keys.reads == reads
    assert world.policy.token_cache.hits == 5


def test_a_cached_token_never_outlives_exp() -> None:
    world = build()
    token = token_at(world)
    assert code(decide(world.policy, ctx(token=token), T0)) == "allow"
    assert code(decide(world.policy, ctx(token=token), T0 + 300 + SKEW)) == (
        "401 invalid_token: token expired"
    )


def test_a_key_set_change_drops_cached_tokens() -> None:
    world = build()
    token = token_at(world)
    assert code(decide(world.policy, ctx(token=token), T0)) == "allow"
    world.keys.keys = parse_jwks(json.dumps(jwt_kit.jwks(jwt_kit.rsa_key("k2"))))
    world.keys.generation += 1
    outcome = decide(world.policy, ctx(token=token), T0 + 1)
    assert isinstance(outcome, NeedKeys)
    assert (outcome.source, outcome.kid) == ("idp", "k1")
    assert code(decide(world.policy, ctx(token=token), T0 + 1, may_refetch=False)) == (
        "401 invalid_token: unknown key id"
    )


def test_scope_requirements_all_of_and_any_of() -> None:
    world = build(routes=[{
        "name": "r", "identities": ["idp"],
        "require": {"scopes": {"all_of": ["a"], "any_of": ["b", "c"]}},
    }])
    assert code(decide(world.policy, ctx(token=token_at(world, scope="a c")), T0)) == "allow"
    assert code(decide(world.policy, ctx(token=token_at(world, scope="a")), T0)) == (
        "403 insufficient_scope: requires scope: b c"
    )
    assert code(decide(world.policy, ctx(token=token_at(world, scope="c")), T0)) == (
        "403 insufficient_scope: requires scope: a"
    )


def test_claims_roles_and_principals() -> None:
    world = build(routes=[{
        "name": "r", "identities": ["idp"],
        "require": {"roles": {"any_of": ["admin"]}, "claims": {"tenant": ["acme"]},
                    "principals": ["alice"]},
    }])
    good = token_at(world, sub="alice", roles=["admin"], tenant="acme")
    assert code(decide(world.policy, ctx(token=good), T0)) == "allow"
    for claims, reason in [
        ({"sub": "alice", "roles": ["user"], "tenant": "acme"}, "required role missing"),
        ({"sub": "alice", "roles": ["admin"], "tenant": "globex"}, "claim 'tenant' not accepted"),
        ({"sub": "bob", "roles": ["admin"], "tenant": "acme"}, "principal not allowed"),
    ]:
        assert code(decide(world.policy, ctx(token=token_at(world, **claims)), T0)) == (
            f"403 access_denied: {reason}"
        )


def test_template_variable_matches_one_segment_only() -> None:
    world = build()
    token = token_at(world)
    assert code(decide(world.policy, ctx("/orders/1", token), T0)) == "allow"
    assert code(decide(world.policy, ctx("/orders/1/items", token), T0)).startswith(
        "403 no_matching_route"
    )
    assert code(decide(world.policy, ctx("/orders/", token), T0)).startswith(
        "403 no_matching_route"
    )


def test_hosts_exact_and_wildcard() -> None:
    world = build(routes=[{"name": "r", "anonymous": True,
                           "match": {"hosts": ["api.test", "*.api.test"]}}])
    for host, allowed in [("api.test", True), ("eu.api.test", True), ("api.test:443", True),
                          ("evilapi.test", False), ("api.test.evil", False)]:
        outcome = decide(world.policy, ctx("/x", host=host), T0)
        assert isinstance(outcome, Allow) is allowed, host


def test_unmatched_allow_is_anonymous() -> None:
    world = build(routes=[], unmatched="allow")
    outcome = decide(world.policy, ctx("/anything"), T0)
    assert isinstance(outcome, Allow) and outcome.identity.subject == "anonymous"


def test_anonymous_route_with_requirements_challenges() -> None:
    world = build(routes=[{"name": "r", "anonymous": True,
                           "require": {"scopes": {"all_of": ["x"]}}}])
    assert code(decide(world.policy, ctx("/x"), T0)) == (
        "401 missing_credentials: authentication required"
    )


def test_first_successful_source_wins_and_errors_rank() -> None:
    world = build(routes=[{"name": "r", "identities": ["idp", "mesh"]}])
    # Bad token but a good peer: the peer wins.
    outcome = decide(world.policy, ctx("/x", "a.b.c", peer_principal="spiffe://td/sa/a"), T0)
    assert isinstance(outcome, Allow) and outcome.identity.kind.value == "mtls"
    # Bad token and a refused peer: the refused peer is reported (it ranks above a token error).
    assert code(decide(world.policy, ctx("/x", "a.b.c", peer_principal="spiffe://td/sa/z"),
                       T0)) == "403 peer_not_allowed: peer not allowed"
    # An empty bearer is a malformed request, whatever else is wrong.
    assert code(decide(world.policy, ctx("/x", headers={"authorization": "Bearer "},
                                         peer_principal="spiffe://td/sa/z"), T0)).startswith(
        "400 invalid_request"
    )


def test_context_extensions_pick_the_route_and_add_scopes() -> None:
    world = build(routes=[
        {"name": "open", "anonymous": True, "identities": ["idp"]},
        {"name": "orders", "identities": ["idp"]},
    ])
    token = token_at(world, scope="orders:read")
    extensions = MappingProxyType({"tollgate_route": "orders", "tollgate_scopes": "orders:write"})
    assert code(decide(world.policy, ctx("/x", token, context_extensions=extensions), T0)) == (
        "403 insufficient_scope: requires scope: orders:write"
    )
    unknown = MappingProxyType({"tollgate_route": "nope"})
    assert code(decide(world.policy, ctx("/x", token, context_extensions=unknown), T0)).startswith(
        "403 no_matching_route"
    )


@pytest.mark.parametrize("path", ["/a/../b", "/a/./b", "/a//b", "/a/%2E%2e/b", "/a\\b", "/a%00"])
def test_ambiguous_paths(path: str) -> None:
    world = build()
    assert code(decide(world.policy, ctx(path), T0)) == (
        "400 invalid_request: ambiguous request path"
    )


def test_roles_come_from_the_configured_claim_and_only_read_claims_are_kept() -> None:
    key = jwt_kit.rsa_key("k1")
    keys = CountingKeys(parse_jwks(json.dumps(jwt_kit.jwks(key))))
    config = AuthzConfig.model_validate({
        "identities": [{"name": "idp", "jwt": {
            "issuer": jwt_kit.ISSUER, "jwks_uri": "https://idp.test/jwks", "roles_claim": "groups",
        }}],
        "routes": [{"name": "r", "require": {"roles": {"all_of": ["ops"]},
                                             "claims": {"tenant": "acme"}}}],
    })
    policy = compile_config(config, lambda name, source: keys)
    claims = {"iat": int(T0), "nbf": int(T0), "exp": int(T0) + 300, "tenant": "acme",
              "groups": "ops dev", "ssn": "not-needed"}
    outcome = decide(policy, ctx("/x", jwt_kit.mint(key, **claims)), T0)
    assert isinstance(outcome, Allow)
    assert dict(outcome.identity.claims) == {"tenant": "acme", "roles": ["ops", "dev"]}
    denied = decide(policy, ctx("/x", jwt_kit.mint(key, **{**claims, "groups": "dev"})), T0)
    assert code(denied) == "403 access_denied: required role missing"
