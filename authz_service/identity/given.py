"""A caller as a policy test states it: who, proven by which source, without a credential.

`tollgate test` (authz_service/policy/suite.py) turns one into the Identity the named
source would have produced for a real credential, through that mechanism's own
`given_identity` (identity/registry.py), so the policy sees what it sees in service.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from authz_service.config_base import Model


class GivenIdentity(Model):
    source: str  # the identity source (identities[].name) that proves it
    kind: str | None = None  # optional: the source's mechanism (jwt, api_key, mtls), checked
    # JWT: the verified token's claims; subject / scopes / roles fill the claims the
    # source is configured to read them from (subject_claim, scope_claims, roles_claim).
    subject: str | None = None
    scopes: list[str] = Field(default_factory=list)
    roles: list[str] = Field(default_factory=list)
    claims: dict[str, Any] = Field(default_factory=dict)
    key: str | None = None  # API key: the key's id (keys[].id)
    spiffe: str | None = None  # mTLS: the SPIFFE ID Envoy verified
