"""The decision phases: route -> identity + authorization -> validation + answer.

Pure: no I/O, the clock is an argument. Identity: the route's sources are tried
in order and the first success wins. Authorization: every requirement must pass.
When a token names a key id the issuer's key set lacks, the engine answers
NeedKeys and the caller may refresh that issuer's keys and decide again; when a
credential can only be judged after I/O (an introspection call), it answers NeedLookup
and the caller awaits the lookups and decides again.
`authz_service.pipeline` runs the phases for every door, with the rate-limit
stages between them.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import MappingProxyType

from authz_service.contract import ROUTE_EXTENSION, SCOPES_EXTENSION
from authz_service.identity.base import Proven
from authz_service.identity.errors import (
    CredentialError,
    DependencyUnavailable,
    DpopRefusal,
    ForeignCredential,
    KeysUnavailable,
    LookupNeeded,
    MalformedRequest,
    NotAllowed,
)
from authz_service.identity.jwt import KeysNeeded
from authz_service.models import (
    ANONYMOUS,
    ANONYMOUS_KIND,
    Allow,
    Decision,
    Deny,
    Identity,
    RequestContext,
)
from authz_service.policy import denials
from authz_service.policy.compiled import CompiledPolicy
from authz_service.policy.config import POLICY_DENIALS
from authz_service.policy.routes import CompiledRoute, check_requirements

MAX_HEADER_VALUE = 1024
_SHADOWABLE = frozenset(POLICY_DENIALS)

# Dot segments, doubled slashes, backslashes and encoded '.', '/', '\\' in the
# path: Envoy normalises these when configured to; if one reaches us, the request
# could dodge a route policy, so it is refused rather than guessed at. A dot
# segment with ";params" (/..;/) counts: Tomcat-style upstreams strip the params
# and then normalise, which Envoy does not.
_AMBIGUOUS_PATH = re.compile(r"//|/\.\.?(/|;|$)|\\|%2e|%2f|%5c|%00", re.IGNORECASE)

# Header and metadata values carry printable ASCII only: no CR/LF/NUL to split a
# header, no C1 or look-alike characters to confuse a log or a descriptor.
_UNSAFE = re.compile(r"[^\x20-\x7e]")


@dataclass(frozen=True, slots=True)
class NeedKeys:
    source: str
    kid: str
    fallback: Deny  # the answer if the refresh does not bring the key


@dataclass(frozen=True, slots=True)
class NeedLookup:
    """Some source can only judge the credential after I/O: await every lookup (each
    bounds its own wait), then decide again with may_refetch=False."""

    lookups: tuple[Callable[[], Awaitable[None]], ...]
    fallback: Deny  # the answer if the lookups settle nothing


# Proven: the caller must still record its proof (a DPoP jti) before the answer.
Outcome = Decision | NeedKeys | NeedLookup | Proven


def decide(
    policy: CompiledPolicy, ctx: RequestContext, now: float, *, may_refetch: bool = True
) -> Outcome:
    """The whole pure pipeline, for a policy without rate limits (tests, tools, benches).

    The service runs the same phases through `authz_service.pipeline`, which puts the
    rate-limit stages (I/O) between them.
    """
    routed = route(policy, ctx)
    if not isinstance(routed, CompiledRoute):
        return settle(policy, None, routed, ctx)[0]
    found = authenticate(policy, routed, ctx, now, may_refetch=may_refetch)
    if isinstance(found, NeedKeys | NeedLookup):
        return found
    proven = found.identity if isinstance(found, Proven) else found
    if not isinstance(proven, Identity):
        return settle(policy, routed, refused(routed, proven, ctx), ctx)[0]
    refusal = permit(policy, routed, proven, ctx)
    if refusal is None and isinstance(found, Proven):
        return found  # the caller records its proof (I/O), then finishes
    decision = refused(routed, refusal, ctx) if refusal is not None \
        else finish(policy, routed, proven, ctx)
    return settle(policy, routed, decision, ctx, proven)[0]


def refused(route: CompiledRoute, refusal: Deny, ctx: RequestContext) -> Deny:
    """A refusal as answered. On a shadow route it would be let through, so the request
    is validated first: a malformed request is answered as such, never shadowed."""
    if route.shadow and route.validator is not None:
        problem = route.validator.refusal(ctx)
        if problem is not None:
            return denials.malformed(problem, route.name)
    return refusal


def settle(
    policy: CompiledPolicy,
    route: CompiledRoute | None,
    decision: Decision,
    ctx: RequestContext,
    identity: Identity | None = None,
) -> tuple[Decision, Deny | None]:
    """The answer to send for a decision: a policy denial (POLICY_DENIALS) in shadow mode
    becomes an allow, and is returned second, as what would have been answered; a denial
    the operator shaped is shaped. Malformed requests, rate limits (their sets have
    their own shadow mode) and failures are never shadowed."""
    if not isinstance(decision, Deny):
        return decision, None
    shadow = route.shadow if route is not None else policy.shadow
    if shadow and decision.code in _SHADOWABLE:
        return _allow(policy, identity or ANONYMOUS, route.name if route else ""), decision
    shape = route.shape if route is not None else policy.shape
    if shape is not None and shape.applies(decision):
        return shape.shape(decision, ctx), None
    return decision, None


def route(policy: CompiledPolicy, ctx: RequestContext) -> CompiledRoute | Decision:
    """Phase 1: the route policy this request falls under, or the answer without one."""
    if _AMBIGUOUS_PATH.search(ctx.path):
        return denials.invalid_request(policy.realm, "ambiguous request path")
    if policy.address is not None and not policy.address.admits(ctx.source_address):
        return denials.address_denied()
    selected = _select_route(policy, ctx)
    if selected is None:
        if policy.unmatched_allowed:
            return _allow(policy, ANONYMOUS, "")
        return denials.no_route()
    return selected



def authenticate(
    policy: CompiledPolicy,
    route: CompiledRoute,
    ctx: RequestContext,
    now: float,
    *,
    may_refetch: bool = True,
) -> Identity | Proven | Deny | NeedKeys | NeedLookup:
    """Phase 2a: the route's address rule, then who is calling (first source that
    succeeds; ANONYMOUS on a public route without credentials). Proven: the identity
    comes with a proof of possession the caller records (I/O) once it is permitted."""
    if route.address is not None and not route.address.admits(ctx.source_address):
        return denials.address_denied(route.name)
    identity: Identity | None = None
    proven: Identity | Proven | None = None
    failure: CredentialError | None = None
    needed: KeysNeeded | None = None
    lookups: tuple[Callable[[], Awaitable[None]], ...] = ()
    for source in route.sources:
        try:
            proven = source.authenticate(ctx, now)
        except KeysNeeded as exc:
            needed = needed or exc
            failure = _worse(failure, exc.error)
            continue
        except LookupNeeded as exc:
            lookups += (exc.lookup,)
            failure = _worse(failure, exc.error)
            continue
        except CredentialError as exc:
            failure = _worse(failure, exc)
            continue
        if proven is not None:
            break

    proof: Proven | None = None
    if isinstance(proven, Proven):
        proof, identity = proven, proven.identity
    else:
        identity = proven
    if identity is None:
        if failure is not None:
            deny = _credential_denial(policy.realm, failure, route.name)
            if may_refetch and not isinstance(failure, MalformedRequest):
                if needed is not None:
                    return NeedKeys(needed.source, needed.kid, deny)
                if lookups:
                    return NeedLookup(lookups, deny)
            return deny
        if not route.anonymous:
            return denials.missing_credentials(policy.realm, route.name, route.dpop_algs)
        identity = ANONYMOUS
    return identity if proof is None else proof


def permit(
    policy: CompiledPolicy, route: CompiledRoute, identity: Identity, ctx: RequestContext
) -> Deny | None:
    """Phase 2b: None when the identity meets the route's requirements, else the denial."""
    extra = ctx.context_extensions.get(SCOPES_EXTENSION, "").split()
    refusal = check_requirements(route.require, identity, ctx, realm=policy.realm,
                                 route=route.name, extra_scopes=extra)
    if refusal is not None:
        if identity.kind == ANONYMOUS_KIND:
            return denials.missing_credentials(policy.realm, route.name, route.dpop_algs)
        return refusal
    return None


def finish(
    policy: CompiledPolicy, route: CompiledRoute, identity: Identity, ctx: RequestContext
) -> Decision:
    """Phase 3: request validation, then the answer for an authorized caller."""
    if route.validator is not None:
        # Only now, once the caller is known and allowed: no CPU spent on, and no
        # schema detail shown to, anyone else.
        problem = route.validator.refusal(ctx)
        if problem is not None:
            return denials.malformed(problem, route.name)
    return _allow(policy, identity, route.name)


def _select_route(policy: CompiledPolicy, ctx: RequestContext) -> CompiledRoute | None:
    named = ctx.context_extensions.get(ROUTE_EXTENSION)
    if named is not None:
        # Envoy's per-route context_extensions pick the policy by name; an unknown
        # name selects nothing, so the request is denied like an unmatched one.
        return policy.routes_by_name.get(named)
    for route in policy.routes:
        if route.matches(ctx):
            return route
    return None


def _worse(current: CredentialError | None, new: CredentialError) -> CredentialError:
    # Which failure the client hears about when no source succeeds: errors.py ranks them.
    return new if current is None or new.rank < current.rank else current


def _credential_denial(realm: str, error: CredentialError, route: str) -> Deny:
    if isinstance(error, DpopRefusal):
        return denials.dpop_refusal(realm, error.error, error.description, error.algs,
                                    route, nonce=error.nonce)
    if isinstance(error, MalformedRequest):
        return denials.invalid_request(realm, error.description, route)
    if isinstance(error, NotAllowed):
        return denials.access_denied(error.description, route, code="peer_not_allowed")
    if isinstance(error, ForeignCredential):
        return denials.invalid_token(realm, "issuer not accepted", route)
    if isinstance(error, KeysUnavailable):
        return denials.keys_unavailable(route)
    if isinstance(error, DependencyUnavailable):
        return denials.dependency_unavailable(error.code, error.description, route)
    return denials.invalid_token(realm, error.description, route)


def _header_value(value: object) -> str | None:
    """A claim as a header value, or None if it could smuggle anything."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return None
    text = str(value)
    if len(text) > MAX_HEADER_VALUE or _UNSAFE.search(text):
        return None
    return text


def _allow(policy: CompiledPolicy, identity: Identity, route: str) -> Allow:
    # Every identity source hands out long-lived Identity objects (the token cache's,
    # one per API key or listed peer, ANONYMOUS), so an answer is built once per route.
    allow = policy.caches.allows.get(identity, route)
    if allow is None:
        allow = policy.caches.allows.put(identity, route, _build_allow(policy, identity, route))
    return allow


def _build_allow(policy: CompiledPolicy, identity: Identity, route: str) -> Allow:
    up = policy.upstream
    scopes = " ".join(sorted(identity.scopes))
    anonymous = identity.kind == ANONYMOUS_KIND
    values: list[tuple[str | None, str]] = [
        (up.subject, "" if anonymous else identity.subject),
        (up.identity, identity.kind),
        (up.scopes, scopes),
        (up.tenant, identity.tenant),
        (up.plan, identity.plan),
    ]
    for path, header in policy.upstream_claims:
        values.append((header, _header_value(path.read(identity.claims)) or ""))
    headers: list[tuple[str, str]] = []
    for name, value in values:
        safe = _header_value(value) if value else None
        if name is not None and safe:
            headers.append((name, safe))
    set_names = {name for name, _ in headers}
    # Every identity header we did not set is removed, so a client cannot forge one.
    remove = [h for h in policy.identity_headers if h not in set_names]
    if up.strip_credential and not anonymous:
        remove.extend(policy.credential_headers.get(identity.source, ()))
    metadata = {
        "subject": identity.subject,
        "identity": identity.kind,
        "issuer": identity.issuer,
        "tenant": identity.tenant,
        "plan": identity.plan,
        "scopes": scopes,
        "route": route,
    }
    return Allow(
        identity=identity,
        route=route,
        headers=tuple(headers),
        remove_headers=tuple(dict.fromkeys(remove)),
        # The same rule as for headers: these values become rate-limit descriptors.
        metadata=MappingProxyType({k: v for k, v in metadata.items() if v and _header_value(v)}),
    )
