"""A DPoP client for the tests: proof keys, RFC 7638 thumbprints and proofs (RFC 9449),
signed with PyJWT as a real client library would."""

from __future__ import annotations

import base64
import hashlib
import json
import time
import uuid
from typing import Any

import jwt

from tests.kits.jwt_kit import SigningKey, b64


def thumbprint(jwk: dict[str, Any]) -> str:
    """RFC 7638 §3: the required members, sorted, no whitespace, SHA-256, base64url."""
    required = {"EC": ["crv", "kty", "x", "y"], "RSA": ["e", "kty", "n"],
                "OKP": ["crv", "kty", "x"]}[jwk["kty"]]
    text = "{" + ",".join(f'"{name}":"{jwk[name]}"' for name in required) + "}"
    return b64(hashlib.sha256(text.encode()).digest())


def proof_jwk(key: SigningKey) -> dict[str, Any]:
    jwk = key.public_jwk()
    return {k: v for k, v in jwk.items() if k not in ("kid", "use", "alg")}


def ath(token: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(token.encode()).digest()).rstrip(b"=").decode()


def proof(
    key: SigningKey,
    method: str,
    url: str,
    token: str | None = None,
    *,
    typ: str = "dpop+jwt",
    jwk: dict[str, Any] | None = None,
    **claims: Any,
) -> str:
    """A DPoP proof for `method url` (and `token`'s ath); `claims` override the defaults
    (jti, iat now), and a claim set to None is left out."""
    payload: dict[str, Any] = {"jti": uuid.uuid4().hex, "htm": method, "htu": url,
                               "iat": int(time.time())}
    if token is not None:
        payload["ath"] = ath(token)
    payload.update(claims)
    payload = {k: v for k, v in payload.items() if v is not None}
    headers = {"typ": typ, "jwk": jwk if jwk is not None else proof_jwk(key)}
    return jwt.encode(payload, key.private, algorithm=key.alg, headers=headers)


def raw_proof(header: dict[str, Any], payload: dict[str, Any], signature: bytes = b"") -> str:
    return ".".join([b64(json.dumps(header).encode()), b64(json.dumps(payload).encode()),
                     b64(signature)])
