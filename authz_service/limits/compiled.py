"""A policy's limit sets compiled per route, and the rules they are counted against."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from authz_service.claims import ClaimPathError, parse_claim_path
from authz_service.limits.actions import (
    ACTIONS,
    ADDRESS,
    IDENTITY,
    NONE,
    REQUEST,
    SKIP,
    EntryFn,
    LimitInput,
)
from authz_service.limits.config import ClaimValue, LimitSet, RateLimits
from ratelimit_service.config import load_rules
from ratelimit_service.headers import HeaderStyle
from ratelimit_service.models import Descriptor, Entry
from ratelimit_service.rules import RuleSet
from tollgate.config import ConfigError, LocatedError

BEFORE_AUTHN = "before_authn"
AFTER_AUTHZ = "after_authz"


@dataclass(frozen=True, slots=True)
class CompiledDescriptor:
    entries: tuple[EntryFn, ...]
    hits: int

    def build(self, inp: LimitInput) -> Descriptor | None:
        built: list[Entry] = []
        for entry_of in self.entries:
            entry = entry_of(inp)
            if entry is None:
                return None
            if entry is not SKIP:
                built.append(entry)  # type: ignore[arg-type]
        return Descriptor(tuple(built), None, self.hits) if built else None


@dataclass(frozen=True, slots=True)
class CompiledSet:
    name: str
    stage: str
    descriptors: tuple[CompiledDescriptor, ...]
    shadow: bool
    fail_open: bool  # store_failure_mode: open
    # What its descriptors depend on beyond the route (actions.NONE, ADDRESS, IDENTITY or
    # REQUEST): the same inputs build the same descriptors, which a caller may keep.
    reads: str = REQUEST

    def descriptors_for(self, inp: LimitInput) -> list[Descriptor]:
        built = (d.build(inp) for d in self.descriptors)
        return [d for d in built if d is not None]


@dataclass(frozen=True, slots=True)
class RouteLimits:
    before: tuple[CompiledSet, ...] = ()
    after: tuple[CompiledSet, ...] = ()


NO_LIMITS = RouteLimits()


@dataclass(frozen=True)
class CompiledLimits:
    domain: str
    rules: RuleSet
    style: HeaderStyle
    by_route: dict[str, RouteLimits]
    files: tuple[Path, ...]  # what a reload watches besides the policy file

    def for_route(self, route: str) -> RouteLimits:
        return self.by_route.get(route, NO_LIMITS)


def claim_roots(config: RateLimits | None) -> set[str]:
    """Top-level claims the `claim` actions read (a cached identity must keep them)."""
    roots: set[str] = set()
    for limit_set in config.sets if config is not None else ():
        for spec in limit_set.descriptors:
            for action in spec.actions:
                if action.claim is not None:
                    try:
                        roots.add(parse_claim_path(action.claim.path).root)
                    except ClaimPathError:
                        continue  # reported with its location by compile_limits
    return roots


def compile_limits(
    config: RateLimits, route_names: Sequence[str], base_dir: Path
) -> CompiledLimits:
    """Raises LocatedError (paths under `rate_limits`) for a set that cannot work."""
    here: tuple[str | int, ...] = ("rate_limits",)
    rules_path = Path(config.rules)
    if not rules_path.is_absolute():
        rules_path = base_dir / rules_path
    try:
        rules = load_rules(rules_path, merge_domains=config.merge_domains)
    except ConfigError as exc:
        raise LocatedError((*here, "rules"), f"cannot load the rules: {exc}") from None
    if config.domain not in rules.domains:
        known = ", ".join(sorted(rules.domains)) or "none"
        raise LocatedError(
            (*here, "domain"), f"domain '{config.domain}' is not in {rules_path} (domains: {known})"
        )
    known_routes = set(route_names)
    seen: set[str] = set()
    sets: list[CompiledSet] = []
    applies: list[frozenset[str] | None] = []
    for index, spec in enumerate(config.sets):
        at = (*here, "sets", index)
        if spec.name in seen:
            raise LocatedError((*at, "name"), f"duplicate limit set name '{spec.name}'")
        seen.add(spec.name)
        for pos, name in enumerate(spec.routes or []):
            if name not in known_routes:
                raise LocatedError((*at, "routes", pos), f"unknown route '{name}'")
        sets.append(_compile_set(spec, at))
        applies.append(frozenset(spec.routes) if spec.routes is not None else None)
    by_route: dict[str, RouteLimits] = {}
    for route in route_names:
        mine = [s for s, only in zip(sets, applies, strict=True) if only is None or route in only]
        by_route[route] = RouteLimits(
            before=tuple(s for s in mine if s.stage == BEFORE_AUTHN),
            after=tuple(s for s in mine if s.stage == AFTER_AUTHZ),
        )
    return CompiledLimits(
        domain=config.domain,
        rules=rules,
        style=HeaderStyle(config.headers),
        by_route=by_route,
        files=(rules_path,),  # a directory's signature covers its files
    )


def _compile_set(spec: LimitSet, at: tuple[str | int, ...]) -> CompiledSet:
    descriptors: list[CompiledDescriptor] = []
    reads: set[str] = set()
    for d_index, descriptor in enumerate(spec.descriptors):
        entries: list[EntryFn] = []
        for a_index, action in enumerate(descriptor.actions):
            where = (*at, "descriptors", d_index, "actions", a_index)
            name, value = action.kind()
            kind = ACTIONS[name]
            reads.add(kind.reads)
            if kind.needs_identity and spec.stage == BEFORE_AUTHN:
                raise LocatedError(
                    (*where, name),
                    f"'{name}' needs the caller's identity: use it in an after_authz set",
                )
            try:
                entries.append(kind.compile(value, name))
            except ClaimPathError as exc:
                field = ("path",) if isinstance(value, ClaimValue) else ()
                raise LocatedError((*where, name, *field), str(exc)) from None
        descriptors.append(CompiledDescriptor(tuple(entries), descriptor.hits_addend))
    return CompiledSet(
        name=spec.name,
        stage=spec.stage,
        descriptors=tuple(descriptors),
        shadow=spec.shadow,
        fail_open=spec.store_failure_mode == "open",
        reads=depends_on(reads),
    )


def depends_on(reads: set[str]) -> str:
    """One input descriptors depend on (of their actions', or sets', `reads`), or
    REQUEST when it is several or the request itself."""
    kinds = reads - {NONE}
    if not kinds:
        return NONE
    if len(kinds) == 1 and kinds <= {ADDRESS, IDENTITY}:
        return next(iter(kinds))
    return REQUEST
