"""Which claims an identity keeps, and which reach Envoy as headers and metadata."""

from __future__ import annotations

import json
from types import MappingProxyType

from authz_service.config import AuthzConfig
from authz_service.keys.keyset import KeySet, parse_jwks
from authz_service.models import Allow, Deny, RequestContext
from authz_service.policy.compiled import compile_config
from authz_service.policy.engine import decide
from tests.kits import jwt_kit

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


def test_non_ascii_claims_reach_neither_headers_nor_metadata() -> None:
    # Plan and tenant become rate-limit descriptors: only printable ASCII passes.
    key = jwt_kit.rsa_key("k1")
    keys = StaticKeys(parse_jwks(json.dumps(jwt_kit.jwks(key))))
    config = AuthzConfig.model_validate({
        "identities": [{"name": "idp", "jwt": {
            "issuer": jwt_kit.ISSUER, "jwks_uri": "https://idp.test/jwks"}}],
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
