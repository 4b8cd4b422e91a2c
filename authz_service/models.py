"""The neutral types every phase of the pipeline reads and writes.

None of these know about gRPC or Envoy protobufs: the adapter converts a
CheckRequest into a RequestContext and a Decision into a CheckResponse.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from authz_service.validation.problems import ProblemDetail


def _empty() -> MappingProxyType[str, str]:
    return MappingProxyType({})



# Built once per request: not frozen, since a frozen dataclass's __init__ costs 1.5 µs
# more here (one object.__setattr__ per field). Nothing assigns to it after the door
# builds it; it is the request's one working document, read by every phase.
@dataclass(slots=True)
class RequestContext:
    """One request as the decision engine sees it (header names lower-case)."""

    method: str
    path: str  # without the query string, as Envoy normalised it
    host: str = ""
    scheme: str = "https"
    query: str = ""
    headers: Mapping[str, str] = field(default_factory=_empty)
    duplicate_headers: frozenset[str] = frozenset()  # names Envoy saw more than once
    peer_principal: str = ""  # Envoy's source.principal: URI SAN of a verified client cert
    peer_certificate: bool = False
    context_extensions: Mapping[str, str] = field(default_factory=_empty)
    request_id: str = ""  # x-request-id: the id Envoy's access log and the upstream see
    body: bytes = b""
    source_address: str = ""  # the client's IP address as Envoy determined it
    peer_certificate_sha256: str = ""  # hex SHA-256 of the verified client certificate (DER)
    peer_certificate_pem: str = ""  # gRPC door: Envoy's URL-encoded PEM of that certificate
    # The trace context the door received beside the request (gRPC call metadata); the
    # HTTP door's is among its headers. Only the decision log reads it.
    trace_parent: str = ""


@dataclass(frozen=True, slots=True)
class Identity:
    """Who is calling, once a source has proven it."""

    kind: str  # the identity mechanism (jwt, api_key, mtls, ...) or "anonymous"
    subject: str
    source: str  # name of the identity source that proved it
    scopes: frozenset[str] = frozenset()
    claims: MappingProxyType[str, Any] = field(default_factory=_empty)
    issuer: str = ""
    tenant: str = ""
    plan: str = ""


ANONYMOUS_KIND = "anonymous"
ANONYMOUS = Identity(kind=ANONYMOUS_KIND, subject="anonymous", source="anonymous")


@dataclass(frozen=True, slots=True)
class Allow:
    identity: Identity
    route: str
    headers: tuple[tuple[str, str], ...] = ()  # to set on the upstream request
    remove_headers: tuple[str, ...] = ()  # to remove from the upstream request
    # dynamic metadata for later filters (rate-limit descriptors, access logs)
    metadata: MappingProxyType[str, str] = field(default_factory=_empty)


@dataclass(frozen=True, slots=True)
class Deny:
    """A denial the client can act on: HTTP status, stable code, RFC 6750 challenge."""

    status: int
    code: str  # stable error code: body `error` and metric label
    description: str
    challenge: str | None = None  # WWW-Authenticate value, when the client should (re)authenticate
    route: str = ""
    problem: ProblemDetail | None = None  # a malformed request: answered as problem+json
    headers: tuple[tuple[str, str], ...] = ()  # more response headers (Retry-After, ...)
    # An operator-shaped answer (authz_service.policy.shaping): this exact body and type.
    body: bytes | None = None
    content_type: str = ""


Decision = Allow | Deny


@dataclass(slots=True)  # per request, like RequestContext
class Answer:
    """What the pipeline tells every door: the decision, and on an allow the headers
    for the client's response (the rate-limit headers, which change per request while
    a cached token's Allow does not). The rest is for the decision log and metrics."""

    decision: Decision
    client_headers: tuple[tuple[str, str], ...] = ()
    identity: Identity | None = None  # who was proven, if anyone (denials after authn too)
    limit_outcomes: tuple[tuple[str, str], ...] = ()  # (limit set, outcome) in stage order
    shadowed: Deny | None = None  # what a shadow-mode policy would have answered instead
