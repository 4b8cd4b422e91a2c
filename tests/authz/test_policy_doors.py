"""The policy language through both doors of one real authz-service process, with
Keycloak- and Auth0-shaped tokens: claim paths, requirement trees, CEL, address rules,
shadow mode (and its would-deny metric) and shaped denials."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.kits import jwt_kit
from tests.kits.authz_stack import config_text
from tests.kits.door_kit import Ask, HttpDoorClient, Reply, ask_grpc, ask_http, door_socket
from tests.kits.grpc_kit import AuthzClient, authz_process
from tests.kits.processes import free_port

pytestmark = pytest.mark.integration

IDENTITIES = """
  - name: keycloak
    jwt:
      issuer: {issuer}
      audiences: [{audience}]
      jwks_file: {jwks}
      roles_claim: realm_access.roles
  - name: auth0
    jwt:
      issuer: {issuer}
      audiences: [{audience}]
      jwks_file: {jwks}
      roles_claim: '["https://example.com/roles"]'
      tenant_claim: '["https://example.com/tenant"]'
      scope_claims: [scope, permissions]
"""
ROUTES = """
  - name: kc-ops
    match: {path: {prefix: /kc/ops}}
    identities: [keycloak]
    require: {roles: {any_of: [ops]}}
  - name: kc-client
    match: {path: {prefix: /kc/client}}
    identities: [keycloak]
    require: {claims: {'resource_access["orders-api"].roles': orders-admin}}
  - name: a0-support
    match: {path: {prefix: /a0}}
    identities: [auth0]
    require:
      any_of:
        - scopes: {all_of: ["write:orders"]}
        - roles: {all_of: [support]}
          claims: {'["https://example.com/tenant"]': acme}
  - name: either
    match: {path: {prefix: /either}}
    identities: [keycloak]
    require:
      any_of:
        - scopes: {all_of: [admin]}
        - roles: {all_of: [admin]}
  - name: cel
    match: {path: {prefix: /cel}}
    identities: [idp]
    require:
      cel: 'request.method == "GET" && request.headers["x-tenant"] == identity.claims.tenant'
  - name: net
    match: {path: {prefix: /net}}
    identities: [idp]
    address: {allow: [10.0.0.0/8], deny: [10.66.0.0/16]}
  - name: dry-run
    match: {path: {prefix: /dry-run}}
    identities: [idp]
    shadow: true
    require: {roles: {all_of: [nobody]}}
  - name: app
    match: {path: {prefix: /app}}
    identities: [idp]
    deny:
      codes: [missing_credentials, invalid_token]
      redirect: "https://login.example.com/start?return_to={path}"
  - name: shaped
    match: {path: {prefix: /shaped}}
    identities: [idp]
    require: {roles: {all_of: [nobody]}}
    deny: {status: 404, headers: {x-why: "{code}"}, body: {message: "not found", code: "{code}"}}
"""

KEYCLOAK = {"realm_access": {"roles": ["offline_access", "ops"]},
            "resource_access": {"orders-api": {"roles": ["orders-admin"]}}}
AUTH0 = {"https://example.com/roles": ["support"], "https://example.com/tenant": "acme",
         "permissions": ["read:orders"]}


@dataclass
class Doors:
    grpc: AuthzClient
    http: HttpDoorClient
    key: jwt_kit.SigningKey
    metrics: str

    def both(self, ask: Ask) -> tuple[Reply, Reply]:
        return ask_grpc(self.grpc, ask), ask_http(self.http, ask)


@pytest.fixture(scope="module")
def doors(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Doors]:
    workdir = tmp_path_factory.mktemp("policy")
    key = jwt_kit.rsa_key("rsa-1")
    jwks = workdir / "jwks.json"
    jwks.write_text(json.dumps(jwt_kit.jwks(key)))
    extra = IDENTITIES.format(issuer=jwt_kit.ISSUER, audience=jwt_kit.AUDIENCE, jwks=jwks)
    config = workdir / "authz.yaml"
    config.write_text(config_text(jwks, extra, ROUTES))
    port = free_port()
    env = {"AUTHZ_METRICS_ADDRESS": f"127.0.0.1:{port}"}
    with authz_process(config, workdir, env=env) as (_, client):
        http = HttpDoorClient(door_socket(workdir))
        try:
            yield Doors(client, http, key, f"http://127.0.0.1:{port}/metrics")
        finally:
            http.close()


def bearer(doors: Doors, **claims: Any) -> dict[str, str]:
    return {"authorization": f"Bearer {jwt_kit.mint(doors.key, **claims)}"}


def same(doors: Doors, ask: Ask) -> Reply:
    """Both doors' answer, required to be the same; the gRPC one returned."""
    grpc_reply, http_reply = doors.both(ask)
    assert (grpc_reply.status, grpc_reply.code) == (http_reply.status, http_reply.code)
    assert grpc_reply.body == http_reply.body
    for header in ("www-authenticate", "location", "x-why", "content-type"):
        assert grpc_reply.headers.get(header) == http_reply.headers.get(header), header
    return grpc_reply


@pytest.mark.parametrize(("path", "claims", "expected"), [
    ("/kc/ops", KEYCLOAK, (200, "ok")),
    ("/kc/ops", {"realm_access": {"roles": ["viewer"]}}, (403, "access_denied")),
    ("/kc/client", KEYCLOAK, (200, "ok")),
    ("/kc/client", {"resource_access": {"orders-api": {"roles": ["x"]}}}, (403, "access_denied")),
    ("/a0", AUTH0, (200, "ok")),
    ("/a0", {**AUTH0, "https://example.com/tenant": "other"}, (403, "insufficient_scope")),
    ("/a0", {"permissions": ["write:orders"]}, (200, "ok")),
    ("/either", {"scope": "admin"}, (200, "ok")),
    ("/either", {"realm_access": {"roles": ["admin"]}}, (200, "ok")),
])
def test_keycloak_and_auth0_tokens(doors: Doors, path: str, claims: dict[str, Any],
                                   expected: tuple[int, str]) -> None:
    reply = same(doors, Ask(path=path, headers=bearer(doors, **claims)))
    assert (reply.status, reply.code) == expected


def test_scope_that_would_suffice_is_named_in_the_challenge(doors: Doors) -> None:
    reply = same(doors, Ask(path="/either", headers=bearer(doors, scope="orders:read")))
    assert (reply.status, reply.code) == (403, "insufficient_scope")
    assert 'error="insufficient_scope", scope="admin"' in reply.headers["www-authenticate"]


def test_cel_condition_over_request_and_identity(doors: Doors) -> None:
    token = bearer(doors, tenant="acme")
    assert same(doors, Ask(path="/cel", headers={**token, "x-tenant": "acme"})).status == 200
    refused = same(doors, Ask(path="/cel", headers={**token, "x-tenant": "evil"}))
    assert (refused.status, refused.code) == (403, "access_denied")
    assert refused.body is not None and refused.body["error_description"] == "condition not met"


@pytest.mark.parametrize(("source", "status"), [
    ("10.1.2.3", 200), ("10.66.0.1", 403), ("192.0.2.1", 403),
])
def test_address_rule_reads_envoys_source_address(doors: Doors, source: str,
                                                  status: int) -> None:
    forged = {"x-forwarded-for": "10.1.2.3"}  # a client's header is never the address
    reply = same(doors, Ask(path="/net", source_address=source,
                            headers={**bearer(doors), **forged}))
    assert reply.status == status
    if status == 403:
        assert reply.code == "address_denied"


def test_shadow_route_allows_and_counts_a_would_deny(doors: Doors) -> None:
    def would_deny() -> float:
        body = urllib.request.urlopen(doors.metrics, timeout=5).read().decode()  # noqa: S310
        for line in body.splitlines():
            if line.startswith('tollgate_authz_would_deny_total{code="access_denied"}'):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    before = would_deny()
    grpc_reply, http_reply = doors.both(Ask(path="/dry-run", headers=bearer(doors, sub="bob")))
    assert grpc_reply.status == http_reply.status == 200
    assert grpc_reply.headers["x-tollgate-subject"] == "bob"  # the proven caller, as allowed
    assert would_deny() == before + 2


def test_browser_route_redirects_to_login(doors: Doors) -> None:
    reply = same(doors, Ask(path="/app/home"))
    assert reply.status == 302
    assert reply.headers["location"] == "https://login.example.com/start?return_to=/app/home"
    assert "www-authenticate" not in reply.headers


def test_shaped_json_denial(doors: Doors) -> None:
    reply = same(doors, Ask(path="/shaped", headers=bearer(doors)))
    assert reply.status == 404
    assert reply.body == {"message": "not found", "code": "access_denied"}
    assert reply.headers["x-why"] == "access_denied"
    assert reply.headers["content-type"] == "application/json"
