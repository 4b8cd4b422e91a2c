"""Requirement trees: what a route requires of a caller, compiled once at load.

A config `Requirements` group becomes one `Requirement`: leaves (scopes, roles,
claims, principals, address, CEL) under `AllOf` / `AnyOf` / `Not`. A flat group is
an AllOf of its leaves in the order scopes, roles, claims, principals, so existing
configs answer exactly as before. `failure()` is the hot path: it returns None or
the `Missing` to answer with; `explain()` walks the same nodes for `tollgate explain`.

Which denial a failed tree answers with: the first failing part of an AllOf; for an
AnyOf whose every alternative failed, an alternative that scopes alone would have
satisfied, if there is one (so the client hears RFC 6750 `scope=` and can ask for
that scope), else every alternative's reason.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from authz_service.claims import ClaimPath, parse_claim_path
from authz_service.identity.base import string_list
from authz_service.models import Identity, RequestContext
from authz_service.policy.address import CompiledAddressRule, compile_address_rule
from authz_service.policy.config import Requirements, ScopeRule
from tollgate.config import LocatedError

Location = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class Missing:
    """Why a requirement failed, as the client hears it."""

    description: str
    code: str = "access_denied"
    scopes: str = ""  # missing scopes: the RFC 6750 scope= of an insufficient_scope answer
    alone: bool = True  # nothing but those scopes failed: getting them would suffice

    @property
    def scope_only(self) -> bool:
        return bool(self.scopes) and self.alone


class Requirement(Protocol):
    @property
    def label(self) -> str:
        """What it requires, for explain."""
        ...

    def holds(self, identity: Identity, ctx: RequestContext) -> bool:
        """The hot path: whether it is met, building nothing."""
        ...

    def failure(self, identity: Identity, ctx: RequestContext) -> Missing | None:
        """None when met, else why not (the deny path: may evaluate again)."""
        ...

    @property
    def children(self) -> Sequence[Requirement]: ...


# CEL conditions compile through a factory the policy compiler passes in, so this
# module does not pick the CEL library (authz_service.policy.cel does).
CelCompiler = Callable[[str, Location], "Requirement"]


@dataclass(frozen=True, slots=True)
class ScopesRequired:
    all_of: tuple[str, ...]
    any_of: tuple[str, ...]
    label: str = ""
    children: tuple[Requirement, ...] = ()
    all_set: frozenset[str] = frozenset()  # all_of, for one C-level subset test

    def holds(self, identity: Identity, ctx: RequestContext) -> bool:
        held = identity.scopes
        if not self.all_set <= held:
            return False
        return not self.any_of or any(s in held for s in self.any_of)

    def failure(self, identity: Identity, ctx: RequestContext) -> Missing | None:
        if self.holds(identity, ctx):
            return None
        held = identity.scopes
        missing = [s for s in self.all_of if s not in held]
        if not missing and self.any_of and not any(s in held for s in self.any_of):
            missing = list(self.any_of)
        if not missing:
            return None
        text = " ".join(missing)
        return Missing(f"requires scope: {text}", "insufficient_scope", text)


@dataclass(frozen=True, slots=True)
class RolesRequired:
    all_of: tuple[str, ...]
    any_of: tuple[str, ...]
    label: str = ""
    children: tuple[Requirement, ...] = ()

    def holds(self, identity: Identity, ctx: RequestContext) -> bool:
        roles = string_list(identity.claims.get("roles"))
        return all(r in roles for r in self.all_of) and (
            not self.any_of or any(r in roles for r in self.any_of))

    def failure(self, identity: Identity, ctx: RequestContext) -> Missing | None:
        return None if self.holds(identity, ctx) else Missing("required role missing")


@dataclass(frozen=True, slots=True)
class ClaimAccepted:
    path: ClaimPath
    accepted: frozenset[str]
    label: str = ""
    children: tuple[Requirement, ...] = ()

    def holds(self, identity: Identity, ctx: RequestContext) -> bool:
        value = self.path.read(identity.claims)
        values = [value] if isinstance(value, str | int | bool) else string_list(value)
        for v in values:
            text = str(v)
            # a JSON boolean matches YAML's spelling too: `email_verified: "true"`
            if text in self.accepted or (isinstance(v, bool) and text.lower() in self.accepted):
                return True
        return False

    def failure(self, identity: Identity, ctx: RequestContext) -> Missing | None:
        if self.holds(identity, ctx):
            return None
        return Missing(f"claim '{self.path.text}' not accepted")


@dataclass(frozen=True, slots=True)
class PrincipalAllowed:
    principals: frozenset[str]
    label: str = ""
    children: tuple[Requirement, ...] = ()

    def holds(self, identity: Identity, ctx: RequestContext) -> bool:
        return identity.subject in self.principals

    def failure(self, identity: Identity, ctx: RequestContext) -> Missing | None:
        return None if self.holds(identity, ctx) else Missing("principal not allowed")


@dataclass(frozen=True, slots=True)
class AddressAllowed:
    rule: CompiledAddressRule
    label: str = ""
    children: tuple[Requirement, ...] = ()

    def holds(self, identity: Identity, ctx: RequestContext) -> bool:
        return self.rule.admits(ctx.source_address)

    def failure(self, identity: Identity, ctx: RequestContext) -> Missing | None:
        if self.holds(identity, ctx):
            return None
        return Missing("client address not allowed", "address_denied")


@dataclass(frozen=True, slots=True)
class AllOf:
    children: tuple[Requirement, ...]
    label: str = "all of"

    def holds(self, identity: Identity, ctx: RequestContext) -> bool:
        for child in self.children:  # noqa: SIM110 (a loop: no generator on the hot path)
            if not child.holds(identity, ctx):
                return False
        return True

    def failure(self, identity: Identity, ctx: RequestContext) -> Missing | None:
        for index, child in enumerate(self.children):
            missing = child.failure(identity, ctx)
            if missing is not None:
                if missing.scope_only:
                    return self._rest(missing, identity, ctx, index)
                return missing
        return None

    def _rest(self, first: Missing, identity: Identity, ctx: RequestContext,
              index: int) -> Missing:
        # The first failure, a scope, is the answer (as a flat group always said); the
        # rest (evaluated on the deny path only) decides whether those scopes would
        # suffice, and adds the scopes it misses too.
        scopes = [first.scopes]
        for child in self.children[index + 1:]:
            later = child.failure(identity, ctx)
            if later is None:
                continue
            if not later.scope_only:
                return Missing(first.description, first.code, first.scopes, alone=False)
            scopes.append(later.scopes)
        if len(scopes) == 1:
            return first
        text = " ".join(dict.fromkeys(" ".join(scopes).split()))
        return Missing(f"requires scope: {text}", "insufficient_scope", text)


@dataclass(frozen=True, slots=True)
class AnyOf:
    children: tuple[Requirement, ...]
    label: str = "any of"

    def holds(self, identity: Identity, ctx: RequestContext) -> bool:
        for child in self.children:  # noqa: SIM110 (a loop: no generator on the hot path)
            if child.holds(identity, ctx):
                return True
        return False

    def failure(self, identity: Identity, ctx: RequestContext) -> Missing | None:
        reasons: list[Missing] = []
        for child in self.children:
            missing = child.failure(identity, ctx)
            if missing is None:
                return None
            reasons.append(missing)
        for missing in reasons:
            if missing.scope_only:
                return missing
        codes = {m.code for m in reasons} - {"insufficient_scope"}
        code = codes.pop() if len(codes) == 1 else "access_denied"
        text = "; ".join(dict.fromkeys(m.description for m in reasons))
        return Missing(f"none of the alternatives met: {text}", code)


@dataclass(frozen=True, slots=True)
class Not:
    child: Requirement
    label: str = "not"

    @property
    def children(self) -> tuple[Requirement, ...]:
        return (self.child,)

    def holds(self, identity: Identity, ctx: RequestContext) -> bool:
        return not self.child.holds(identity, ctx)

    def failure(self, identity: Identity, ctx: RequestContext) -> Missing | None:
        if self.child.holds(identity, ctx):
            return Missing(f"excluded by rule: not {self.child.label}")
        return None


def compile_requirements(
    group: Requirements, location: Location, cel: CelCompiler | None = None
) -> Requirement | None:
    """The compiled tree of a config group, None when it requires nothing.

    `location` is the group's place in the config file, for LocatedError."""
    parts: list[Requirement] = []
    if group.scopes is not None:
        parts.append(_scopes(group.scopes))
    if group.roles is not None:
        parts.append(RolesRequired(tuple(group.roles.all_of), tuple(group.roles.any_of),
                                   _rule_label("roles", group.roles)))
    for path, accepted in group.claims.items():
        wanted = [accepted] if isinstance(accepted, str) else accepted
        parts.append(ClaimAccepted(parse_claim_path(path), frozenset(wanted),
                                   f"claim {path} in {sorted(set(wanted))}"))
    if group.principals:
        parts.append(PrincipalAllowed(frozenset(group.principals),
                                      f"principal in {sorted(set(group.principals))}"))
    if group.address is not None:
        parts.append(AddressAllowed(compile_address_rule(group.address),
                                    _address_label(group.address.allow, group.address.deny)))
    if group.cel is not None:
        if cel is None:
            raise LocatedError((*location, "cel"), "CEL conditions are not available here")
        parts.append(cel(group.cel, (*location, "cel")))
    for key, groups, kind in (("all_of", group.all_of, AllOf), ("any_of", group.any_of, AnyOf)):
        children = []
        for index, sub in enumerate(groups):
            compiled = compile_requirements(sub, (*location, key, index), cel)
            if compiled is not None:
                children.append(compiled)
        if children:
            parts.append(kind(tuple(children)))
    if group.not_ is not None:
        negated = compile_requirements(group.not_, (*location, "not"), cel)
        if negated is not None:
            parts.append(Not(negated))
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else AllOf(tuple(parts))


def with_scopes(tree: Requirement | None, scopes: Sequence[str]) -> Requirement:
    """`tree` and these scopes too (Envoy's per-route `tollgate_scopes`), scopes first."""
    extra = ScopesRequired(tuple(scopes), (), f"scopes all_of {list(scopes)}", (),
                           frozenset(scopes))
    return extra if tree is None else AllOf((extra, tree))


def _scopes(rule: ScopeRule) -> ScopesRequired:
    return ScopesRequired(tuple(rule.all_of), tuple(rule.any_of), _rule_label("scopes", rule),
                          (), frozenset(rule.all_of))


def _rule_label(what: str, rule: ScopeRule) -> str:
    parts = []
    if rule.all_of:
        parts.append(f"all_of {rule.all_of}")
    if rule.any_of:
        parts.append(f"any_of {rule.any_of}")
    return f"{what} {' and '.join(parts) or '(none)'}"


def _address_label(allow: list[str], deny: list[str]) -> str:
    parts = ([f"in {allow}"] if allow else []) + ([f"not in {deny}"] if deny else [])
    return "address " + " and ".join(parts)


@dataclass(frozen=True, slots=True)
class Step:
    """One node of an explained tree: what it requires and whether it held."""

    label: str
    passed: bool
    reason: str = ""
    children: tuple[Step, ...] = field(default=())


def explain(tree: Requirement, identity: Identity, ctx: RequestContext) -> Step:
    """Every node's verdict (the whole tree, not stopping at the first failure)."""
    missing = tree.failure(identity, ctx)
    kids = tuple(explain(child, identity, ctx) for child in tree.children)
    return Step(tree.label, missing is None, missing.description if missing else "", kids)


def step_lines(step: Step, depth: int = 0) -> list[str]:
    mark = "pass" if step.passed else "FAIL"
    line = f"{'  ' * depth}{mark}  {step.label}"
    if step.reason:
        line += f": {step.reason}"
    return [line, *(ln for child in step.children for ln in step_lines(child, depth + 1))]


def kept_claim_roots(tree: Requirement | None) -> set[str]:
    """The top-level claims a tree reads (a cached identity keeps only these)."""
    if tree is None:
        return set()
    roots: set[str] = set()
    if isinstance(tree, ClaimAccepted):
        roots.add(tree.path.root)
    reads: Any = getattr(tree, "claim_roots", None)
    if reads is not None:
        roots |= set(reads)
    for child in tree.children:
        roots |= kept_claim_roots(child)
    return roots
