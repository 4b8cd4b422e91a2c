"""Route policies: which rule a request falls under, and what that rule requires."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from authz_service.config import Requirements, RouteMatch, RoutePolicy, ScopeRule
from authz_service.identity.base import IdentitySource, string_list
from authz_service.models import Deny, Identity, RequestContext
from authz_service.policy import denials
from authz_service.validation.request import RequestValidator

_TEMPLATE_VAR = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def template_regex(template: str) -> re.Pattern[str]:
    """`/orders/{id}` -> a regex where each variable matches exactly one segment."""
    pattern = ""
    pos = 0
    for var in _TEMPLATE_VAR.finditer(template):
        pattern += re.escape(template[pos : var.start()]) + r"[^/]+"
        pos = var.end()
    pattern += re.escape(template[pos:])
    if "{" in template[pos:] or "}" in template[pos:]:
        raise ValueError(f"bad template variable in '{template}'")
    return re.compile(pattern)


@dataclass(frozen=True)
class PathMatcher:
    exact: str | None
    prefix: str | None
    regex: re.Pattern[str] | None

    def matches(self, path: str) -> bool:
        if self.exact is not None:
            return path == self.exact
        if self.prefix is not None:
            return path.startswith(self.prefix)
        return self.regex is not None and self.regex.fullmatch(path) is not None


def _host_matches(patterns: Sequence[str], host: str) -> bool:
    host = host.lower().rsplit(":", 1)[0] if not host.endswith("]") else host.lower()
    for pattern in patterns:
        if pattern.startswith("*."):
            if host.endswith(pattern[1:]) and len(host) > len(pattern) - 1:
                return True
        elif host == pattern:
            return True
    return False


@dataclass(frozen=True)
class CompiledRoute:
    name: str
    hosts: tuple[str, ...]
    methods: frozenset[str]
    path: PathMatcher | None
    anonymous: bool
    sources: tuple[IdentitySource, ...]
    require: Requirements
    validator: RequestValidator | None = None  # request validation, after authorization
    dpop_algs: str = ""  # proof algorithms of its DPoP sources: the 401's `DPoP algs=`

    def matches(self, ctx: RequestContext) -> bool:
        if self.methods and ctx.method not in self.methods:
            return False
        if self.hosts and not _host_matches(self.hosts, ctx.host):
            return False
        return self.path is None or self.path.matches(ctx.path)


def compile_route(
    policy: RoutePolicy,
    sources: tuple[IdentitySource, ...],
    validator: RequestValidator | None = None,
) -> CompiledRoute:
    match: RouteMatch = policy.match
    path = None
    if match.path is not None:
        regex = template_regex(match.path.template) if match.path.template else None
        path = PathMatcher(match.path.exact, match.path.prefix, regex)
    return CompiledRoute(
        name=policy.name,
        hosts=tuple(h.lower() for h in match.hosts),
        methods=frozenset(match.methods),
        path=path,
        anonymous=policy.anonymous,
        sources=sources,
        require=policy.require,
        validator=validator,
        # A source that takes DPoP says which proof algorithms (identity/jwt.py).
        dpop_algs=" ".join(dict.fromkeys(
            alg for source in sources for alg in getattr(source, "dpop_algs", "").split())),
    )


def _rule_failure(rule: ScopeRule | None, held: frozenset[str]) -> str | None:
    """The missing names as the client should see them, or None when satisfied."""
    if rule is None:
        return None
    missing = [s for s in rule.all_of if s not in held]
    if missing:
        return " ".join(missing)
    if rule.any_of and not any(s in held for s in rule.any_of):
        return " ".join(rule.any_of)
    return None


def check_requirements(
    require: Requirements,
    identity: Identity,
    realm: str,
    route: str,
    extra_scopes: Sequence[str] = (),
) -> Deny | None:
    """None when the identity meets every requirement; else the denial to send."""
    scope_rule = require.scopes
    if extra_scopes:
        base = scope_rule or ScopeRule()
        scope_rule = ScopeRule(all_of=[*base.all_of, *extra_scopes], any_of=base.any_of)
    missing = _rule_failure(scope_rule, identity.scopes)
    if missing is not None:
        return denials.insufficient_scope(realm, missing, route)
    if require.roles is not None:
        roles = frozenset(string_list(identity.claims.get("roles")))
        if _rule_failure(require.roles, roles) is not None:
            return denials.access_denied("required role missing", route)
    for claim, accepted in require.claims.items():
        wanted = {accepted} if isinstance(accepted, str) else set(accepted)
        value = identity.claims.get(claim)
        values = [value] if isinstance(value, str | int | bool) else string_list(value)
        if not any(str(v) in wanted for v in values):
            return denials.access_denied(f"claim '{claim}' not accepted", route)
    if require.principals and identity.subject not in require.principals:
        return denials.access_denied("principal not allowed", route)
    return None
