"""Route policies: which rule a request falls under, and what that rule requires."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from authz_service.config import RouteMatch, RoutePolicy
from authz_service.identity.base import IdentitySource
from authz_service.models import Deny, Identity, RequestContext
from authz_service.policy import denials
from authz_service.policy.address import CompiledAddressRule, compile_address_rule
from authz_service.policy.shaping import CompiledShape
from authz_service.policy.tree import Requirement, with_scopes
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
    template: str = ""

    def matches(self, path: str) -> bool:
        if self.exact is not None:
            return path == self.exact
        if self.prefix is not None:
            return path.startswith(self.prefix)
        return self.regex is not None and self.regex.fullmatch(path) is not None

    def describe(self) -> str:
        if self.exact is not None:
            return f"exact {self.exact}"
        if self.prefix is not None:
            return f"prefix {self.prefix}"
        return f"template {self.template}"


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
    require: Requirement | None  # None: nothing beyond a proven identity
    validator: RequestValidator | None = None  # request validation, after authorization
    dpop_algs: str = ""  # proof algorithms of its DPoP sources: the 401's `DPoP algs=`
    address: CompiledAddressRule | None = None  # checked before identity
    shadow: bool = False  # dry run: denials allowed, counted as would-deny
    shape: CompiledShape | None = None  # how denials are answered, when not the default

    def matches(self, ctx: RequestContext) -> bool:
        if self.methods and ctx.method not in self.methods:
            return False
        if self.hosts and not _host_matches(self.hosts, ctx.host):
            return False
        return self.path is None or self.path.matches(ctx.path)

    def mismatch(self, ctx: RequestContext) -> str | None:
        """Why this route does not match `ctx` (None: it matches), for explain."""
        if self.methods and ctx.method not in self.methods:
            return f"method {ctx.method} not in {sorted(self.methods)}"
        if self.hosts and not _host_matches(self.hosts, ctx.host):
            return f"host '{ctx.host}' not in {list(self.hosts)}"
        if self.path is not None and not self.path.matches(ctx.path):
            return f"path {ctx.path} does not match {self.path.describe()}"
        return None


def compile_route(
    policy: RoutePolicy,
    sources: tuple[IdentitySource, ...],
    validator: RequestValidator | None = None,
    *,
    require: Requirement | None = None,
    shape: CompiledShape | None = None,
    shadow: bool = False,
) -> CompiledRoute:
    """`require`: the route's compiled requirement tree (policy.tree). ValueError: a bad
    path template."""
    match: RouteMatch = policy.match
    path = None
    if match.path is not None:
        regex = template_regex(match.path.template) if match.path.template else None
        path = PathMatcher(match.path.exact, match.path.prefix, regex, match.path.template or "")
    return CompiledRoute(
        name=policy.name,
        hosts=tuple(h.lower() for h in match.hosts),
        methods=frozenset(match.methods),
        path=path,
        anonymous=policy.anonymous,
        sources=sources,
        require=require,
        validator=validator,
        # A source that takes DPoP says which proof algorithms (identity/token_binding.py).
        dpop_algs=" ".join(dict.fromkeys(
            alg for source in sources for alg in getattr(source, "dpop_algs", "").split())),
        address=compile_address_rule(policy.address) if policy.address is not None else None,
        shadow=shadow or policy.shadow,
        shape=shape,
    )


def check_requirements(
    require: Requirement | None,
    identity: Identity,
    ctx: RequestContext,
    *,
    realm: str,
    route: str,
    extra_scopes: Sequence[str] = (),
) -> Deny | None:
    """None when the identity meets every requirement; else the denial to send."""
    if extra_scopes:
        require = with_scopes(require, extra_scopes)
    if require is None or require.holds(identity, ctx):
        return None
    missing = require.failure(identity, ctx)
    if missing is None:
        return None
    if missing.scopes:
        return denials.insufficient_scope(realm, missing.scopes, route)
    return denials.access_denied(missing.description, route, code=missing.code)
