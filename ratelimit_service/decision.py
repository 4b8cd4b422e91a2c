"""Pure decision: which limits apply, then thresholds, shadow and quota modes, headers.

No I/O and no clock of its own: `plan` turns a query into checks, a store turns the
counter operations into `Usage`s, and `decide` turns those into a `Decision` exactly
as envoyproxy/ratelimit does (its base_limiter and service code), case by case.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ratelimit_service.model import (
    AppliedLimit,
    CounterOp,
    Limit,
    RateLimitQuery,
    Stats,
    Usage,
)
from ratelimit_service.rules import RuleSet

MAX_UINT32 = 2**32 - 1


class Code(enum.IntEnum):
    """Envoy's `RateLimitResponse.Code` values."""

    UNKNOWN = 0
    OK = 1
    OVER_LIMIT = 2


class RequestError(ValueError):
    """A request the service cannot answer (empty domain, no descriptors)."""


@dataclass(frozen=True, slots=True)
class HeaderNames:
    limit: str = "X-RateLimit-Limit"
    remaining: str = "X-RateLimit-Remaining"
    reset: str = "X-RateLimit-Reset"


@dataclass(frozen=True, slots=True)
class DecisionSettings:
    """Operator settings that change answers (read once at start)."""

    near_limit_ratio: float = 0.8
    shadow_mode: bool = False  # global: always answer OK, still count and report
    quota_mode: bool = False  # global: every limit is a quota
    headers: HeaderNames | None = None  # None: no X-RateLimit-* headers
    key_prefix: str = ""
    dynamic_metadata: bool = False  # RESPONSE_DYNAMIC_METADATA


@dataclass(frozen=True, slots=True)
class Check:
    """One descriptor after lookup: the limit to count (if any) and its cost."""

    applied: AppliedLimit | None
    unlimited: bool
    hits: int

    @property
    def limit(self) -> Limit | None:
        return self.applied.rule.limit if self.applied is not None else None


@dataclass(frozen=True, slots=True)
class DescriptorStatus:
    code: Code
    current_limit: Limit | None = None
    limit_remaining: int = 0
    duration_until_reset: int | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    overall_code: Code
    statuses: tuple[DescriptorStatus, ...]
    headers: tuple[tuple[str, str], ...] = ()
    dynamic_metadata: Mapping[str, Any] | None = None
    failed_open: bool = False  # the store was down and the operator chose fail-open


def plan(rules: RuleSet, query: RateLimitQuery) -> list[Check]:
    """Look up every descriptor, then drop unlimited and replaced limits."""
    if not query.domain:
        raise RequestError("rate limit domain must not be empty")
    if not query.descriptors:
        raise RequestError("rate limit descriptor list must not be empty")
    found = [rules.lookup(query.domain, d) for d in query.descriptors]
    replaced = {name for a in found if a is not None for name in a.rule.replaces}
    checks: list[Check] = []
    for index, applied in enumerate(found):
        hits = query.hits_for(index)
        if applied is None:
            checks.append(Check(None, False, hits))
        elif applied.rule.unlimited:
            checks.append(Check(None, True, hits))
        elif applied.rule.name and applied.rule.name in replaced:
            checks.append(Check(None, False, hits))
        else:
            checks.append(Check(applied, False, hits))
    return checks


def counter_base(prefix: str, domain: str, applied: AppliedLimit) -> str:
    """`prefix + domain_key_value_key2_value2_`: the reference's key without the window."""
    parts = [prefix, domain, "_"]
    for entry in applied.counter_entries:
        parts.extend((entry.key, "_", entry.value, "_"))
    return "".join(parts)


def counter_ops(checks: Sequence[Check], domain: str, prefix: str = "") -> list[CounterOp]:
    """The store operations for the checks that have a limit, in order."""
    ops: list[CounterOp] = []
    for check in checks:
        if check.applied is not None and check.applied.rule.limit is not None:
            base = counter_base(prefix, domain, check.applied)
            ops.append(CounterOp(base, check.hits, check.applied.rule.limit))
    return ops


def decide(
    checks: Sequence[Check],
    usages: Sequence[Usage],
    settings: DecisionSettings,
    stats: Stats | None = None,
) -> Decision:
    """Statuses, overall code and headers from the store's usages (one per limited check)."""
    statuses: list[DescriptorStatus] = []
    header_source: DescriptorStatus | None = None
    min_remaining = MAX_UINT32
    failed_rate = failed_quota = total_quota = 0
    usage_iter = iter(usages)
    for check in checks:
        if check.unlimited:
            statuses.append(DescriptorStatus(Code.OK, None, MAX_UINT32))
            continue
        limit = check.limit
        if check.applied is None or limit is None:
            statuses.append(DescriptorStatus(Code.OK))
            continue
        status = _status(
            check.applied,
            limit=limit,
            usage=next(usage_iter),
            hits=check.hits,
            settings=settings,
            stats=stats,
        )
        statuses.append(status)
        if settings.headers is not None and status.limit_remaining < min_remaining:
            header_source, min_remaining = status, status.limit_remaining
        quota = settings.quota_mode or check.applied.rule.quota_mode
        if status.code is Code.OVER_LIMIT:
            if quota:
                failed_quota += 1
            else:
                failed_rate += 1
                header_source, min_remaining = status, 0
        if quota:
            total_quota += 1
    over = failed_rate > 0 or (total_quota > 0 and failed_quota == total_quota)
    code = Code.OVER_LIMIT if over else Code.OK
    if over and settings.shadow_mode:
        code = Code.OK
        if stats is not None:
            stats.add("service", "global_shadow_mode")
    headers: tuple[tuple[str, str], ...] = ()
    if settings.headers is not None and header_source is not None:
        headers = _headers(settings.headers, header_source)
    return Decision(code, tuple(statuses), headers)


def _status(
    applied: AppliedLimit,
    *,
    limit: Limit,
    usage: Usage,
    hits: int,
    settings: DecisionSettings,
    stats: Stats | None,
) -> DescriptorStatus:
    rule = applied.rule
    key = applied.stats_key
    threshold = limit.requests_per_unit
    near = math.floor(threshold * settings.near_limit_ratio)
    if stats is not None:
        stats.add(key, "total_hits", hits)
    if usage.from_local_cache:
        over = True
        status = DescriptorStatus(Code.OVER_LIMIT, limit, 0, usage.reset_seconds)
        if stats is not None:
            stats.add(key, "over_limit", hits)
            stats.add(key, "over_limit_with_local_cache", hits)
    elif usage.after > threshold:
        over = True
        status = DescriptorStatus(Code.OVER_LIMIT, limit, 0, usage.reset_seconds)
        if stats is not None:
            if usage.before >= threshold:
                stats.add(key, "over_limit", hits)
            else:
                stats.add(key, "over_limit", usage.after - threshold)
                stats.add(key, "near_limit", threshold - max(near, usage.before))
    else:
        over = False
        status = DescriptorStatus(
            Code.OK, limit, threshold - usage.after, usage.reset_seconds
        )
        if stats is not None:
            if usage.after > near:
                stats.add(key, "near_limit", hits if usage.before >= near else usage.after - near)
            stats.add(key, "within_limit", hits)
    if over and rule.shadow_mode:
        status = DescriptorStatus(Code.OK, limit, 0, usage.reset_seconds)
        if stats is not None:
            shadowed = hits
            if not usage.from_local_cache and usage.before < threshold:
                shadowed = usage.after - threshold
            stats.add(key, "shadow_mode", shadowed)
    return status


def _headers(names: HeaderNames, status: DescriptorStatus) -> tuple[tuple[str, str], ...]:
    limit = status.current_limit
    if limit is None:  # only statuses with a limit are chosen; keep mypy and -O honest
        return ()
    return (
        (names.limit, str(limit.requests_per_unit)),
        (names.remaining, str(status.limit_remaining)),
        (names.reset, str(status.duration_until_reset or 0)),
    )


def fail_open(query: RateLimitQuery) -> Decision:
    """The answer when the store is down and the operator chose fail-open."""
    statuses = tuple(DescriptorStatus(Code.OK) for _ in query.descriptors)
    return Decision(Code.OK, statuses, failed_open=True)
