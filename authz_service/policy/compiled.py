"""AuthzConfig -> the snapshot the engine decides with.

Everything that can be done once is done here: identity sources built, routes
compiled, names cross-checked. A reload compiles a new snapshot and swaps it. The
snapshot's rules never change; beside them it carries, explicitly, the caches that
live and die with it (PolicyCaches): what they hold was derived from these rules and
keys, so a reload starts them empty.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path

from authz_service.claims import ClaimPath, parse_claim_path
from authz_service.config import AuthzConfig, UpstreamHeaders
from authz_service.identity.base import IdentitySource
from authz_service.identity.introspection import IntrospectorFactory
from authz_service.identity.jwt import KeyProviderFactory
from authz_service.identity.registry import KINDS, SourceContext
from authz_service.identity.token_cache import TokenCache
from authz_service.limits.compiled import CompiledLimits, claim_roots, compile_limits
from authz_service.models import Allow
from authz_service.policy.address import CompiledAddressRule, compile_address_rule
from authz_service.policy.cel import compile_condition
from authz_service.policy.routes import CompiledRoute, compile_route
from authz_service.policy.shaping import CompiledShape, compile_shape
from authz_service.policy.tree import compile_requirements, kept_claim_roots
from authz_service.validation.request import RequestValidator, compile_validation
from authz_service.validation.schema import SchemaError
from tollgate.config import LocatedError
from tollgate.memo import Memo


@dataclass
class PolicyCaches:
    """The mutable part of a snapshot: verified tokens, and the Allow built for a cached
    identity on a route (built once, beside the value types, not inside them)."""

    tokens: TokenCache
    allows: Memo[Allow]


@dataclass(frozen=True)
class CompiledPolicy:
    realm: str
    unmatched_allowed: bool
    fail_with_error: bool
    routes: tuple[CompiledRoute, ...]
    routes_by_name: dict[str, CompiledRoute]
    sources: dict[str, IdentitySource]
    credential_headers: dict[str, tuple[str, ...]]  # source -> headers carrying its credential
    upstream: UpstreamHeaders
    identity_headers: tuple[str, ...]  # every header name this service sets upstream
    caches: PolicyCaches
    limits: CompiledLimits | None  # the rate limits decided in the Check, if any
    config: AuthzConfig
    upstream_claims: tuple[tuple[ClaimPath, str], ...] = ()  # claim path -> header
    address: CompiledAddressRule | None = None  # for every request, before routing
    shadow: bool = False  # dry run for the whole policy
    shape: CompiledShape | None = None  # the denial shape of routes without their own


def compile_config(
    config: AuthzConfig,
    key_provider: KeyProviderFactory,
    base_dir: Path | None = None,
    introspector: IntrospectorFactory | None = None,
) -> CompiledPolicy:
    """`base_dir`: where relative schema / OpenAPI paths start (the config's directory);
    `introspector`: builds the I/O side of introspection sources (none: they are refused)."""
    cache = TokenCache(config.token_cache.max_entries)
    max_token = config.limits.max_token_bytes
    global_shape = compile_shape(config.deny) if config.deny is not None else None
    # Validators and requirements first: a CEL condition may read the validated body,
    # and what requirements read decides which claims a cached identity keeps.
    validators: list[RequestValidator | None] = []
    requirements = []
    for index, policy in enumerate(config.routes):
        validator: RequestValidator | None = None
        if policy.validate_ is not None:
            try:
                validator = compile_validation(policy.validate_, base_dir or Path.cwd())
            except SchemaError as exc:
                raise LocatedError(("routes", index, "validate"), str(exc)) from None
        validators.append(validator)
        cel = partial(compile_condition, body=validator.body_document if validator else None)
        requirements.append(
            compile_requirements(policy.require, ("routes", index, "require"), cel))
    upstream_claims = tuple((parse_claim_path(p), h) for p, h in config.upstream.claims.items())
    # Cached identities keep only the claims some rule or header reads: a verified
    # token's full claim set would cost ~2 KB per cache entry. "*": a CEL condition
    # reads claims in a way that cannot be told in advance, so all are kept.
    kept_claims = frozenset(
        {"roles", *(path.root for path, _ in upstream_claims)}
        | {root for tree in requirements for root in kept_claim_roots(tree)}
        | claim_roots(config.rate_limits)
    )
    sources: dict[str, IdentitySource] = {}
    credential_headers: dict[str, tuple[str, ...]] = {}
    for index, spec in enumerate(config.identities):
        if spec.name in sources or spec.name == "anonymous":
            raise LocatedError(("identities", index, "name"), f"duplicate name '{spec.name}'")
        kind, settings = spec.mechanism()
        mechanism = KINDS[kind]
        context = SourceContext(spec.name, key_provider, cache, max_token, kept_claims,
                                base_dir or Path.cwd(), introspector)
        try:
            sources[spec.name] = mechanism.build(context, settings)
        except ValueError as exc:
            raise LocatedError(("identities", index, kind), str(exc)) from None
        credential_headers[spec.name] = mechanism.credential_headers(settings)

    routes: list[CompiledRoute] = []
    by_name: dict[str, CompiledRoute] = {}
    for index, policy in enumerate(config.routes):
        if policy.name in by_name:
            raise LocatedError(("routes", index, "name"), f"duplicate route name '{policy.name}'")
        names = policy.identities if policy.identities is not None else list(sources)
        for pos, name in enumerate(names):
            if name not in sources:
                raise LocatedError(
                    ("routes", index, "identities", pos), f"unknown identity source '{name}'"
                )
        if not names and not policy.anonymous:
            raise LocatedError(
                ("routes", index), "route has no identity sources and is not anonymous"
            )
        validator = validators[index]
        shape = compile_shape(policy.deny) if policy.deny is not None else global_shape
        try:
            route = compile_route(policy, tuple(sources[n] for n in names), validator,
                                  require=requirements[index], shape=shape,
                                  shadow=config.shadow)
        except ValueError as exc:
            raise LocatedError(("routes", index, "match", "path"), str(exc)) from None
        routes.append(route)
        by_name[policy.name] = route

    limits = None
    if config.rate_limits is not None:
        limits = compile_limits(config.rate_limits, list(by_name), base_dir or Path.cwd())

    up = config.upstream
    identity_headers = tuple(
        h
        for h in (up.subject, up.identity, up.scopes, up.tenant, up.plan, *up.claims.values())
        if h is not None
    )
    return CompiledPolicy(
        realm=config.realm,
        unmatched_allowed=config.unmatched == "allow",
        fail_with_error=config.on_error == "error",
        routes=tuple(routes),
        routes_by_name=by_name,
        sources=sources,
        credential_headers=credential_headers,
        upstream=up,
        identity_headers=identity_headers,
        caches=PolicyCaches(cache, Memo(2 * config.token_cache.max_entries)),
        limits=limits,
        config=config,
        upstream_claims=upstream_claims,
        address=compile_address_rule(config.address) if config.address is not None else None,
        shadow=config.shadow,
        shape=global_shape,
    )
