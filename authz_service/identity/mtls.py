"""mTLS peer identity from Envoy's verified peer certificate (SPIFFE IDs).

Only `attributes.source.principal` is read: Envoy sets it from the certificate it
verified itself. A header such as XFCC could be sent by the client and is never
consulted here.
"""

from __future__ import annotations

from collections import OrderedDict
from types import MappingProxyType
from typing import TYPE_CHECKING, Annotated

from pydantic import Field

from authz_service.config_base import Model
from authz_service.identity.errors import NotAllowed
from authz_service.identity.given import GivenIdentity
from authz_service.models import Identity, RequestContext

if TYPE_CHECKING:
    from authz_service.identity.registry import SourceContext

KIND = "mtls"
ID_CLAIM = "spiffe_id"  # the claim an mTLS identity names its peer by


class MtlsPrincipal(Model):
    spiffe: Annotated[str, Field(pattern=r"^spiffe://[^/\s]+(/\S*)?$")]
    subject: str | None = None
    scopes: list[str] = Field(default_factory=list)
    roles: list[str] = Field(default_factory=list)
    metadata: dict[str, str] = Field(default_factory=dict)


class MtlsSource(Model):
    # Only Envoy's attributes.source.principal (the verified peer certificate's URI
    # SAN) is read; XFCC or any other header is never trusted.
    trust_domains: list[str] = Field(default_factory=list)
    principals: list[MtlsPrincipal] = Field(default_factory=list)
    allow_any_in_trust_domain: bool = False

MAX_UNLISTED_PEERS = 4096


def trust_domain(spiffe_id: str) -> str:
    return spiffe_id[len("spiffe://") :].split("/", 1)[0]


class MtlsIdentitySource:
    kind = KIND

    def __init__(self, name: str, config: MtlsSource) -> None:
        self.name = name
        self.trust_domains = frozenset(config.trust_domains)
        self.principals = {p.spiffe: self._identity(p) for p in config.principals}
        self.allow_any = config.allow_any_in_trust_domain
        # Peers admitted by trust domain alone, one Identity each (bounded).
        self._others: OrderedDict[str, Identity] = OrderedDict()

    def authenticate(self, ctx: RequestContext, now: float) -> Identity | None:
        principal = ctx.peer_principal
        if not principal:
            return None
        if not principal.startswith("spiffe://") or any(c in principal for c in "?#,\r\n\t "):
            raise NotAllowed("peer identity is not a SPIFFE ID")
        if self.trust_domains and trust_domain(principal) not in self.trust_domains:
            raise NotAllowed("peer trust domain not accepted")
        known = self.principals.get(principal)
        if known is not None:
            return known
        if not (self.allow_any and self.trust_domains):
            raise NotAllowed("peer not allowed")
        other = self._others.get(principal)
        if other is None:
            other = self._others[principal] = Identity(
                KIND, principal, self.name, claims=MappingProxyType({ID_CLAIM: principal}))
            if len(self._others) > MAX_UNLISTED_PEERS:
                self._others.popitem(last=False)
        return other

    def _identity(self, entry: MtlsPrincipal) -> Identity:
        principal = entry.spiffe
        return Identity(
            kind=KIND,
            subject=entry.subject or principal,
            source=self.name,
            scopes=frozenset(entry.scopes),
            claims=MappingProxyType({"roles": list(entry.roles), ID_CLAIM: principal}),
            tenant=entry.metadata.get("tenant", ""),
            plan=entry.metadata.get("plan", ""),
        )


def build(ctx: SourceContext, config: MtlsSource) -> MtlsIdentitySource:
    return MtlsIdentitySource(ctx.name, config)


def given_identity(source: MtlsIdentitySource, given: GivenIdentity) -> Identity:
    """A policy test's caller: what this source makes of a peer certificate with this
    SPIFFE ID (NotAllowed, as in service, when its trust domain or list refuses it)."""
    if given.spiffe is None or given.claims or given.key is not None:
        raise ValueError("an mTLS identity is given as 'spiffe: <the peer's SPIFFE ID>'")
    peer = RequestContext("GET", "/", peer_principal=given.spiffe, peer_certificate=True)
    identity = source.authenticate(peer, 0.0)
    if identity is None:  # an empty principal
        raise ValueError("'spiffe' is empty")
    return identity


def credential_headers(config: MtlsSource) -> tuple[str, ...]:
    return ()  # the peer certificate is no header
