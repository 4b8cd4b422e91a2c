"""Validated YAML models (schema.py) -> the compiled RuleTree (rules.py), in one direction.

Semantic errors are raised as `LocatedError` with the document path, so the loader
reports `file:line: path: reason`.
"""

from __future__ import annotations

from collections.abc import Sequence

from ratelimit_service.algorithms import REGISTRY
from ratelimit_service.models import Limit, Rule, Unit
from ratelimit_service.rules import Node, RuleTree, Selector
from ratelimit_service.schema import (
    DescriptorYaml,
    DomainYaml,
    RateLimitByYaml,
    RateLimitYaml,
    WindowYaml,
)
from tollgate.config import LocatedError

UNITS = {unit.name.lower(): unit for unit in Unit}
Path = tuple[str | int, ...]


def compile_domain(doc: DomainYaml) -> RuleTree:
    """Compile a validated domain document; semantic errors are LocatedError."""
    if not doc.domain:
        raise LocatedError(("domain",), "config file cannot have empty domain")
    root = Node()
    _compile_level(root, doc.descriptors or [], f"{doc.domain}.", ("descriptors",), ())
    return RuleTree(doc.domain, root)


def _compile_level(
    node: Node, descriptors: list[DescriptorYaml], parent_key: str, path: Path,
    ancestors: tuple[str, ...],
) -> None:
    for index, desc in enumerate(descriptors):
        here = (*path, index)
        if not desc.key:
            raise LocatedError((*here, "key"), "descriptor has empty key")
        final = f"{desc.key}_{desc.value}" if desc.value else desc.key
        full_key = parent_key + final
        if final in node.children:
            raise LocatedError(here, f"duplicate descriptor composite key '{full_key}'")
        given = [k for k in ("rate_limit", "rate_limits", "rate_limit_by")
                 if getattr(desc, k) is not None]
        if len(given) > 1:
            raise LocatedError((*here, given[1]), f"use only one of {' / '.join(given)}")
        keys = (*ancestors, desc.key)
        rule = selector = None
        if desc.rate_limit is not None:
            rule = _reference_rule(desc, desc.rate_limit, full_key, (*here, "rate_limit"))
        elif desc.rate_limits is not None:
            rule = _stacked_rule(desc, desc.rate_limits, full_key, (*here, "rate_limits"))
        elif desc.rate_limit_by is not None:
            selector = _selector(desc, desc.rate_limit_by, full_key, keys,
                                 (*here, "rate_limit_by"))
        if desc.charge_all_windows and desc.rate_limits is None and desc.rate_limit_by is None:
            raise LocatedError((*here, "charge_all_windows"),
                               "charge_all_windows needs rate_limits (several windows)")
        if desc.share_threshold and "*" not in final:
            raise LocatedError(
                (*here, "share_threshold"),
                "share_threshold can only be used with wildcard values (containing '*'), "
                f"but found key '{final}'",
            )
        if "*" in final:
            node.wildcards.append((final, tuple(final.split("*"))))
        child = Node(
            rule=rule,
            selector=selector,
            value_to_metric=desc.value_to_metric,
            share_threshold=desc.share_threshold,
        )
        _compile_level(child, desc.descriptors or [], f"{full_key}.", (*here, "descriptors"),
                       keys)
        node.children[final] = child


def _unit(text: str, path: Path) -> Unit:
    unit = UNITS.get(text.lower())
    if unit is None:
        raise LocatedError((*path, "unit"), f"invalid rate limit unit '{text}'")
    return unit


def _limit(spec: RateLimitYaml | WindowYaml, unit: Unit, path: Path) -> Limit:
    algorithm = REGISTRY.get(spec.algorithm)
    if algorithm is None:
        known = ", ".join(sorted(REGISTRY))
        raise LocatedError((*path, "algorithm"),
                           f"unknown algorithm '{spec.algorithm}' (known: {known})")
    if spec.burst and not algorithm.takes_burst:
        with_burst = ", ".join(sorted(n for n, a in REGISTRY.items() if a.takes_burst))
        raise LocatedError((*path, "burst"),
                           f"{algorithm.name} has no burst (algorithms with one: {with_burst})")
    limit = Limit(spec.requests_per_unit, unit, spec.name, algorithm.name, spec.burst)
    problem = algorithm.check(limit)
    if problem:
        raise LocatedError((*path, "algorithm"), problem)
    return limit


def _rule(desc: DescriptorYaml, full_key: str, limits: tuple[Limit, ...], *, name: str = "",
          unlimited: bool = False, replaces: tuple[str, ...] = ()) -> Rule:
    return Rule(
        full_key=full_key,
        limits=limits,
        name=name,
        unlimited=unlimited,
        shadow_mode=desc.shadow_mode,
        quota_mode=desc.quota_mode,
        replaces=replaces,
        detailed_metric=desc.detailed_metric,
        metadata=desc.metadata,
        charge_all_windows=desc.charge_all_windows,
    )


def _reference_rule(
    desc: DescriptorYaml, spec: RateLimitYaml, full_key: str, path: Path
) -> Rule:
    if spec.unlimited and UNITS.get(spec.unit.lower()) is not None:
        raise LocatedError((*path, "unit"), "should not specify rate limit unit when unlimited")
    replaces: list[str] = []
    for j, item in enumerate(spec.replaces or []):
        if not item.name:
            raise LocatedError((*path, "replaces", j), "should not have an empty replaces entry")
        if item.name == spec.name:
            raise LocatedError(
                (*path, "replaces", j, "name"),
                "replaces should not contain name of same descriptor",
            )
        replaces.append(item.name)
    limits = () if spec.unlimited else (_limit(spec, _unit(spec.unit, path), path),)
    return _rule(desc, full_key, limits, name=spec.name, unlimited=spec.unlimited,
                 replaces=tuple(replaces))


def _windows(specs: Sequence[WindowYaml], path: Path) -> tuple[Limit, ...]:
    """Stacked windows: at least one, each with its own unit (its counter's identity)."""
    if not specs:
        raise LocatedError(path, "needs at least one window")
    seen: dict[Unit, int] = {}
    limits = []
    for j, spec in enumerate(specs):
        here = (*path, j)
        if spec.unlimited:
            raise LocatedError((*here, "unlimited"),
                               "a window cannot be unlimited (use rate_limit: {unlimited: true})")
        unit = _unit(spec.unit, here)
        if unit in seen:
            raise LocatedError((*here, "unit"),
                               f"two windows with unit '{unit.name.lower()}' "
                               f"(windows {seen[unit]} and {j}): one counter per unit")
        seen[unit] = j
        limits.append(_limit(spec, unit, here))
    return tuple(limits)


def _stacked_rule(
    desc: DescriptorYaml, specs: Sequence[WindowYaml], full_key: str, path: Path
) -> Rule:
    return _rule(desc, full_key, _windows(specs, path))


def _choice(desc: DescriptorYaml, specs: Sequence[WindowYaml], full_key: str, path: Path) -> Rule:
    """One value's limit in `rate_limit_by`: one window, several, or `unlimited`."""
    if len(specs) == 1 and specs[0].unlimited:
        spec = specs[0]
        if UNITS.get(spec.unit.lower()) is not None:
            raise LocatedError((*path, 0, "unit"),
                               "should not specify rate limit unit when unlimited")
        return _rule(desc, full_key, (), name=spec.name, unlimited=True)
    limits = _windows(specs, path)
    return _rule(desc, full_key, limits, name=specs[0].name if len(specs) == 1 else "")


def _selector(
    desc: DescriptorYaml, spec: RateLimitByYaml, full_key: str, keys: tuple[str, ...],
    path: Path,
) -> Selector:
    if spec.key not in keys:
        raise LocatedError((*path, "key"),
                           f"'{spec.key}' is not an entry of this descriptor "
                           f"(entries: {', '.join(keys)})")
    if spec.default is None:
        raise LocatedError(path, "rate_limit_by needs a default for values it does not list "
                                 "(default: {unlimited: true} to leave them unlimited)")
    depth = keys.index(spec.key)
    rules = {
        value: _choice(desc, windows, f"{full_key}[{spec.key}={value}]",
                       (*path, "values", value))
        for value, windows in (spec.values or {}).items()
    }
    default = _choice(desc, spec.default, full_key, (*path, "default"))
    return Selector(depth, rules, default)
