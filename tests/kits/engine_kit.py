"""The pure engine's test harness: a compiled example policy with fixed keys, requests,
tokens and the checks that an outcome is an allow or a denial."""

from __future__ import annotations

import hashlib
import json
from types import MappingProxyType
from typing import Any

from authz_service.config import AuthzConfig
from authz_service.identity.jwt import JwtSource, KeyProvider
from authz_service.keys.keyset import KeySet, parse_jwks
from authz_service.models import Allow, Deny, RequestContext
from authz_service.policy.compiled import CompiledPolicy, compile_config
from authz_service.policy.engine import NeedKeys, decide
from tests.kits import jwt_kit

NOW = 1_700_000_000.0
SKEW = 30
API_KEY = "tg_test_key_0123456789abcdef"
ADMIN = "spiffe://tollgate.test/ns/prod/sa/admin"
RSA = jwt_kit.rsa_key("rsa-1")
OTHER = jwt_kit.rsa_key("rsa-2")


class FakeKeys:
    """A KeyProvider over a fixed key set; counts how often the keys are read."""

    def __init__(self, keys: KeySet) -> None:
        self._keys = keys
        self.generation = 1
        self.reads = 0

    @property
    def key_set(self) -> KeySet:
        self.reads += 1
        return self._keys

    def replace(self, keys: KeySet) -> None:
        self._keys = keys
        self.generation += 1


def base_config(**overrides: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "realm": "tollgate",
        "identities": [
            {
                "name": "idp",
                "jwt": {
                    "issuer": jwt_kit.ISSUER,
                    "audiences": [jwt_kit.AUDIENCE],
                    "jwks_file": "unused.json",
                    "algorithms": ["RS256"],
                    "clock_skew_seconds": SKEW,
                    "required_claims": ["exp", "sub"],
                },
            },
            {
                "name": "other-idp",
                "jwt": {
                    "issuer": "https://other.test",
                    "audiences": "any",
                    "jwks_file": "unused.json",
                    "algorithms": ["RS256"],
                },
            },
            {
                "name": "partners",
                "api_key": {
                    "keys": [
                        {
                            "id": "k1",
                            "sha256": hashlib.sha256(API_KEY.encode()).hexdigest(),
                            "subject": "svc-billing",
                            "scopes": ["orders:read"],
                            "roles": ["billing"],
                        }
                    ]
                },
            },
            {
                "name": "mesh",
                "mtls": {
                    "trust_domains": ["tollgate.test"],
                    "principals": [{"spiffe": ADMIN, "scopes": ["admin"], "roles": ["ops"]}],
                },
            },
        ],
        "routes": [
            {"name": "health", "match": {"path": {"exact": "/healthz"}}, "anonymous": True},
            {
                "name": "public-scoped",
                "match": {"path": {"exact": "/public-scoped"}},
                "anonymous": True,
                "identities": ["idp"],
                "require": {"scopes": {"all_of": ["orders:read"]}},
            },
            {
                "name": "orders-read",
                "match": {"methods": ["GET"], "path": {"template": "/orders/{id}"}},
                "identities": ["idp", "partners", "mesh"],
                "require": {"scopes": {"all_of": ["orders:read"]}},
            },
            {
                "name": "item",
                "match": {"path": {"template": "/shops/{shop}/items/{item}/detail"}},
                "identities": ["idp"],
            },
            {
                "name": "tenant",
                "match": {"hosts": ["*.acme.test"], "path": {"prefix": "/t"}},
                "identities": ["idp"],
                "require": {"claims": {"tenant": ["acme", "acme-eu"]}},
            },
            {
                "name": "ops",
                "match": {"path": {"prefix": "/ops"}},
                "identities": ["partners", "mesh"],
                "require": {"roles": {"any_of": ["ops", "sre"]}},
            },
            {
                "name": "admin",
                "match": {"path": {"prefix": "/admin"}},
                "identities": ["mesh", "idp"],
                "require": {"principals": [ADMIN]},
            },
            {
                "name": "any-idp",
                "match": {"path": {"prefix": "/any"}},
                "identities": ["other-idp", "idp"],
            },
        ],
    }
    config.update(overrides)
    return config


class Built:
    def __init__(self, config: dict[str, Any] | None = None) -> None:
        self.providers: dict[str, FakeKeys] = {}
        jwks = parse_jwks(json.dumps(jwt_kit.jwks(RSA)))

        def factory(name: str, source: JwtSource) -> KeyProvider:
            provider = FakeKeys(jwks)
            self.providers[name] = provider
            return provider

        self.policy: CompiledPolicy = compile_config(
            AuthzConfig.model_validate(config or base_config()), factory
        )

    def decide(self, ctx: RequestContext, now: float = NOW, **kw: Any) -> Allow | Deny | NeedKeys:
        return decide(self.policy, ctx, now, **kw)


def ctx(
    path: str = "/orders/1",
    method: str = "GET",
    headers: dict[str, str] | None = None,
    *,
    host: str = "api.test",
    principal: str = "",
    extensions: dict[str, str] | None = None,
) -> RequestContext:
    return RequestContext(
        method=method,
        path=path,
        host=host,
        headers=MappingProxyType(dict(headers or {})),
        peer_principal=principal,
        context_extensions=MappingProxyType(dict(extensions or {})),
    )


def token(key: jwt_kit.SigningKey = RSA, **claims: Any) -> str:
    base: dict[str, Any] = {"iat": NOW - 60, "nbf": NOW - 60, "exp": NOW + 600}
    base.update(claims)
    return jwt_kit.mint(key, **base)


def bearer(tok: str, **extra: str) -> dict[str, str]:
    return {"authorization": f"Bearer {tok}", **extra}


def deny(outcome: object) -> Deny:
    assert isinstance(outcome, Deny), outcome
    return outcome


def allow(outcome: object) -> Allow:
    assert isinstance(outcome, Allow), outcome
    return outcome
