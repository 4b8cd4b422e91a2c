"""The authz-service the contract suites share: its policy, its keys and a client."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from tests.kits import jwt_kit
from tests.kits.grpc_kit import AuthzClient

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
