"""JWT identity sources for tests: a source model, a policy that fetches keys from a test IdP,
and a key document holding nothing a verifier may use."""

from __future__ import annotations

import json
from typing import Any

import jwt

from authz_service.identity.jwt import JwtSource
from tests.kits import jwt_kit
from tests.kits.http_kit import HttpServer


def source(**fields: Any) -> JwtSource:
    fields.setdefault("issuer", jwt_kit.ISSUER)
    fields.setdefault("algorithms", ["RS256", "ES256"])
    return JwtSource.model_validate(fields)



def remote_config(idp: HttpServer, *, discovery: bool = False, **refresh: float) -> str:
    bounds = {"unknown_kid_cooldown_seconds": 0, "timeout_seconds": 1, **refresh}
    keys = "discovery: true" if discovery else f"jwks_uri: {idp.base_url}/jwks"
    issuer = idp.base_url if discovery else jwt_kit.ISSUER
    return f"""
realm: tollgate
identities:
  - name: idp
    jwt:
      issuer: {issuer}
      audiences: [{jwt_kit.AUDIENCE}]
      {keys}
      algorithms: [RS256]
      refresh: {json.dumps(bounds)}
routes:
  - name: orders-read
    match: {{methods: [GET], path: {{template: "/orders/{{id}}"}}}}
    identities: [idp]
    require: {{scopes: {{all_of: ["orders:read"]}}}}
"""



def unusable_document() -> dict[str, Any]:
    private = json.loads(
        jwt.algorithms.RSAAlgorithm.to_jwk(jwt_kit.rsa_key("priv").private)
    )
    private["kid"] = "priv"
    return {"keys": [
        jwt_kit.rsa_key("rsa-small", bits=1024).public_jwk(),
        {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0c2VjcmV0c2VjcmV0"},
        private,
        {**jwt_kit.rsa_key("rsa-good").public_jwk(), "use": "enc"},
    ]}


