"""Why the engine decides what it does for one request: which route matched (and why
the ones before it did not), the address rules, who the caller is, every requirement
node's verdict and the answer. Pure: the same phases as `engine.decide`, read aloud;
`tollgate explain` prints it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from authz_service.contract import ROUTE_EXTENSION, SCOPES_EXTENSION
from authz_service.identity.base import Proven
from authz_service.models import Allow, Decision, Deny, Identity, RequestContext
from authz_service.policy import denials, engine
from authz_service.policy.compiled import CompiledPolicy
from authz_service.policy.routes import CompiledRoute
from authz_service.policy.tree import Step, explain, step_lines, with_scopes


@dataclass
class Explanation:
    route: str = ""
    routing: list[str] = field(default_factory=list)  # how the route was found
    identity: str = ""  # who the caller is, or why nobody
    requirements: Step | None = None
    decision: Decision | None = None
    shadowed: Deny | None = None  # a shadow-mode denial let through

    def lines(self) -> list[str]:
        out = ["route:", *(f"  {line}" for line in self.routing)]
        if self.identity:
            out += ["identity:", f"  {self.identity}"]
        if self.requirements is not None:
            out += ["requirements:", *step_lines(self.requirements, 1)]
        out.append(f"decision: {describe(self.decision)}")
        if self.shadowed is not None:
            out.append(f"  shadow mode: would have been {describe(self.shadowed)}")
        return out


def describe(decision: Decision | None) -> str:
    if isinstance(decision, Allow):
        return f"allow (route '{decision.route}', subject '{decision.identity.subject}')"
    if isinstance(decision, Deny):
        return f"deny {decision.status} {decision.code}: {decision.description}"
    return "none"


def explain_request(
    policy: CompiledPolicy, ctx: RequestContext, now: float, identity: Identity | None = None
) -> Explanation:
    """The explanation for `ctx`. `identity`: take this caller as proven (a policy test
    without tokens) instead of authenticating the request's credentials."""
    out = Explanation()
    routed = engine.route(policy, ctx)
    out.routing = _routing(policy, ctx, routed)
    if not isinstance(routed, CompiledRoute):
        out.decision, out.shadowed = engine.settle(policy, None, routed, ctx)
        return out
    out.route = routed.name
    if identity is None:
        found = engine.authenticate(policy, routed, ctx, now, may_refetch=False)
        if isinstance(found, engine.NeedKeys | engine.NeedLookup):  # offline: no I/O
            found = found.fallback
        proven = found.identity if isinstance(found, Proven) else found
    elif routed.address is not None and not routed.address.admits(ctx.source_address):
        proven = denials.address_denied(routed.name)
    else:
        proven = identity
    if not isinstance(proven, Identity):
        out.identity = f"not established: {describe(proven)}"
        out.decision, out.shadowed = engine.settle(policy, routed, proven, ctx)
        return out
    given = " (given, not authenticated)" if identity is not None else ""
    out.identity = (f"{proven.kind} '{proven.subject}' from source '{proven.source}'{given}; "
                    f"scopes {sorted(proven.scopes)}")
    extra = ctx.context_extensions.get(SCOPES_EXTENSION, "").split()
    tree = with_scopes(routed.require, extra) if extra else routed.require
    if tree is not None:
        out.requirements = explain(tree, proven, ctx)
    refusal = engine.permit(policy, routed, proven, ctx)
    decision = refusal if refusal is not None else engine.finish(policy, routed, proven, ctx)
    out.decision, out.shadowed = engine.settle(policy, routed, decision, ctx, proven)
    return out


def _routing(policy: CompiledPolicy, ctx: RequestContext,
             routed: CompiledRoute | Decision) -> list[str]:
    if isinstance(routed, Deny) and routed.code in ("invalid_request", "address_denied"):
        return [f"refused before routing: {routed.description}"]
    named = ctx.context_extensions.get(ROUTE_EXTENSION)
    if named is not None:
        if isinstance(routed, CompiledRoute):
            return [f"'{named}': named by Envoy ({ROUTE_EXTENSION})"]
        return [f"Envoy named '{named}' ({ROUTE_EXTENSION}): no such route"]
    lines = []
    for route in policy.routes:
        why = route.mismatch(ctx)
        if why is None:
            lines.append(f"'{route.name}': matched")
            if route.address is not None:
                verdict = "in" if route.address.admits(ctx.source_address) else "NOT in"
                lines.append(f"  client address '{ctx.source_address}' {verdict} its networks")
            return lines
        lines.append(f"'{route.name}': skipped, {why}")
    lines.append("no route matched: " + ("allowed (unmatched: allow)"
                                          if policy.unmatched_allowed else "denied"))
    return lines
