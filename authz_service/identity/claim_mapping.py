"""From a verified set of claims (a JWT's, an introspection answer's) to an Identity.

Which claim names the subject, the scopes, the roles, the tenant and the plan is
configured per source; a cached identity keeps only the claims some rule or header
reads (a full claim set would cost kilobytes per cache entry).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from pydantic import Field, field_validator

from authz_service.claims import parse_claim_path
from authz_service.config_base import Model
from authz_service.identity.base import string_list
from authz_service.identity.errors import InvalidCredential
from authz_service.identity.given import GivenIdentity
from authz_service.models import Identity

_NO_CLAIMS: MappingProxyType[str, object] = MappingProxyType({})


class ClaimNames(Model):
    """The claim names a source reads its identity from (settings shared by sources)."""

    subject_claim: str = "sub"
    scope_claims: list[str] = Field(default_factory=lambda: ["scope", "scp"])
    roles_claim: str = "roles"
    tenant_claim: str = "tenant"
    plan_claim: str = "plan"

    # Claim paths: `realm_access.roles`, `resource_access["orders.api"].roles`, `groups[0]`.
    @field_validator("subject_claim", "roles_claim", "tenant_claim", "plan_claim")
    @classmethod
    def _claim_path(cls, value: str) -> str:
        parse_claim_path(value)
        return value

    @field_validator("scope_claims")
    @classmethod
    def _claim_paths(cls, value: list[str]) -> list[str]:
        for path in value:
            parse_claim_path(path)
        return value


def given_claims(
    names: ClaimNames, given: GivenIdentity, issuer: str, what: str = "JWT"
) -> dict[str, Any]:
    """The claims a credential would carry for a policy test's caller (`tollgate test`):
    its stated claims, with subject, scopes and roles under the source's claim names."""
    if given.key is not None or given.spiffe is not None:
        raise ValueError(f"a {what} identity is given as claims (and subject, scopes, roles)")
    claims: dict[str, Any] = {"iss": issuer, **given.claims}
    if given.subject is not None:
        claims[names.subject_claim] = given.subject
    if given.scopes and names.scope_claims:
        claims[names.scope_claims[0]] = " ".join(given.scopes)
    if given.roles:
        claims[names.roles_claim] = list(given.roles)
    return claims


class ClaimMapping:
    def __init__(
        self, kind: str, source: str, names: ClaimNames, kept_claims: frozenset[str]
    ) -> None:
        self.kind = kind
        self.source = source
        self.names = names
        self.kept_claims = kept_claims
        self._scope_sets: dict[frozenset[str], frozenset[str]] = {}
        # Parsed once, at load: no path is parsed per request.
        self.subject_path = parse_claim_path(names.subject_claim)
        self.scope_paths = tuple(parse_claim_path(p) for p in names.scope_claims)
        self.roles_path = parse_claim_path(names.roles_claim)
        self.tenant_path = parse_claim_path(names.tenant_claim)
        self.plan_path = parse_claim_path(names.plan_claim)

    def identity(self, claims: Mapping[str, Any], issuer: str) -> Identity:
        """The caller these claims prove; InvalidCredential without a subject."""
        subject = self.subject_path.read(claims)
        if not isinstance(subject, str) or not subject:
            raise InvalidCredential(f"missing required claim '{self.names.subject_claim}'")
        scopes: set[str] = set()
        for path in self.scope_paths:
            scopes.update(string_list(path.read(claims)))
        if "*" in self.kept_claims:  # a CEL condition reads claims freely
            kept = dict(claims)
        else:
            kept = {name: claims[name] for name in self.kept_claims if name in claims}
        roles = self.roles_path.read(claims)
        if roles is not None:
            kept["roles"] = string_list(roles)
        tenant = self.tenant_path.read(claims)
        plan = self.plan_path.read(claims)
        return Identity(
            kind=self.kind,
            subject=subject,
            source=self.source,
            scopes=self._shared(frozenset(scopes)),
            claims=MappingProxyType(kept) if kept else _NO_CLAIMS,
            issuer=issuer,
            tenant=tenant if isinstance(tenant, str) else "",
            plan=plan if isinstance(plan, str) else "",
        )

    def _shared(self, scopes: frozenset[str]) -> frozenset[str]:
        """One frozenset per distinct scope set: thousands of cached tokens share a few.

        Bounded: past 1024 distinct sets new ones are simply not shared.
        """
        shared = self._scope_sets.get(scopes)
        if shared is not None:
            return shared
        if len(self._scope_sets) < 1024:
            self._scope_sets[scopes] = scopes
        return scopes
