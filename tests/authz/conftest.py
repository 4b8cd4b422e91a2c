from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.authz import jwt_kit
from tests.authz.grpc_kit import AuthzClient, authz_process

API_KEY = "tg_live_9d1c2f0b7e4a4c58a1f3"  # the test's key; only its digest is in the config


def config_text(jwks_path: Path, extra_identities: str = "", extra_routes: str = "") -> str:
    digest = hashlib.sha256(API_KEY.encode()).hexdigest()
    return f"""
realm: tollgate
identities:
  - name: idp
    jwt:
      issuer: {jwt_kit.ISSUER}
      audiences: [{jwt_kit.AUDIENCE}]
      jwks_file: {jwks_path}
      algorithms: [RS256, PS256, ES256, EdDSA]
      clock_skew_seconds: 30
      required_claims: [exp, sub]
  - name: partners
    api_key:
      header: x-api-key
      keys:
        - id: billing
          sha256: {digest}
          subject: svc-billing
          scopes: ["orders:read"]
          metadata: {{tenant: acme, plan: gold}}
  - name: mesh
    mtls:
      trust_domains: [tollgate.test]
      principals:
        - spiffe: spiffe://tollgate.test/ns/prod/sa/admin
          scopes: [admin]
{extra_identities}
routes:
  - name: health
    match: {{path: {{exact: /healthz}}}}
    anonymous: true
  - name: orders-read
    match: {{methods: [GET], path: {{template: "/orders/{{id}}"}}}}
    identities: [idp, partners]
    require: {{scopes: {{all_of: ["orders:read"]}}}}
  - name: orders-write
    match: {{methods: [POST], path: {{exact: /orders}}}}
    identities: [idp, partners]
    require: {{scopes: {{all_of: ["orders:write"]}}}}
  - name: admin
    match: {{path: {{prefix: /admin}}}}
    identities: [mesh]
    require: {{principals: ["spiffe://tollgate.test/ns/prod/sa/admin"]}}
  - name: validated
    match: {{methods: [POST], path: {{exact: /validated}}}}
    identities: [idp]
    validate:
      schema: {{type: object, properties: {{n: {{type: integer}}}}}}
{extra_routes}
upstream:
  claims: {{email: x-user-email}}
"""


@dataclass
class Stack:
    client: AuthzClient
    key: jwt_kit.SigningKey
    keys: dict[str, jwt_kit.SigningKey]
    config: Path
    jwks: Path
    workdir: Path


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("authz")
    keys = {
        "RS256": jwt_kit.rsa_key("rsa-1"),
        "PS256": jwt_kit.rsa_key("ps-1", "PS256"),
        "ES256": jwt_kit.ec_key("ec-1"),
        "EdDSA": jwt_kit.ed_key("ed-1"),
    }
    jwks_path = workdir / "jwks.json"
    jwks_path.write_text(json.dumps(jwt_kit.jwks(*keys.values())))
    config = workdir / "authz.yaml"
    config.write_text(config_text(jwks_path))
    with authz_process(config, workdir) as (_, client):
        yield Stack(client, keys["RS256"], keys, config, jwks_path, workdir)
