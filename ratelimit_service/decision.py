"""Pure decision: which limits apply, then thresholds, shadow and quota modes, headers.

No I/O and no clock of its own: `plan` turns a query into checks, `counter_ops` into
the counters a store must count, a store turns those into `Usage`s, and `decide`
turns them into a `Answer` exactly as envoyproxy/ratelimit does (its base_limiter
and service code), case by case. A descriptor with stacked windows gets one counter
per window and the status of its most restrictive window.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

from ratelimit_service.headers import HeaderStyle, rate_limit_headers
from ratelimit_service.models import (
    AppliedLimit,
    CounterOp,
    Limit,
    RateLimitQuery,
    Stats,
    Usage,
)
from ratelimit_service.rules import RuleSet
from ratelimit_service.status import Answer, Code, DescriptorStatus, most_restrictive

__all__ = [
    "Answer",
    "Check",
    "Code",
    "DecisionSettings",
    "DescriptorStatus",
    "HeaderNames",
    "RequestError",
    "counter_ops",
    "decide",
    "fail_open",
    "plan",
]

MAX_UINT32 = 2**32 - 1


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
    """One descriptor after lookup: the limit(s) to count (if any) and its cost."""

    applied: AppliedLimit | None
    unlimited: bool
    hits: int

    @property
    def limit(self) -> Limit | None:
        return self.applied.rule.limit if self.applied is not None else None

    @property
    def limits(self) -> tuple[Limit, ...]:
        return self.applied.rule.limits if self.applied is not None else ()


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
    """The store operations for the checks that have a limit, in order (one per window).

    Hits beyond a limit's capacity + 1 cannot change any answer (the request is over
    either way, and every algorithm treats it alike), so they are capped there: no
    client-chosen number (hits_addend is up to 2^64) reaches a store's arithmetic.
    Stacked windows share a Redis Cluster hash tag (one slot: one atomic script) and
    form one stop-increment group unless the rule charges all windows.
    """
    ops: list[CounterOp] = []
    for index, check in enumerate(checks):
        applied = check.applied
        if applied is None or not applied.rule.limits:
            continue
        base = counter_base(prefix, domain, applied)
        limits = applied.rule.limits
        if len(limits) == 1:
            limit = limits[0]
            ops.append(CounterOp(base, min(check.hits, limit.capacity + 1), limit))
            continue
        group = -1 if applied.rule.charge_all_windows else index + 1
        tagged = "{" + base + "}"
        for limit in limits:
            ops.append(CounterOp(f"{tagged}{limit.unit.name.lower()}_",
                                 min(check.hits, limit.capacity + 1), limit, group))
    return ops


def decide(
    checks: Sequence[Check],
    usages: Sequence[Usage],
    settings: DecisionSettings,
    stats: Stats | None = None,
) -> Answer:
    """Statuses, overall code and headers from the store's usages (one per window).

    A descriptor whose counters the store could not count (`Usage.error`) is answered
    OK without a limit: the caller applies its failure mode before getting here.
    """
    statuses: list[DescriptorStatus] = []
    failed_rate = failed_quota = total_quota = 0
    at = 0  # the first usage of the next check with limits (one usage per window)
    for check in checks:
        if check.unlimited:
            statuses.append(DescriptorStatus(Code.OK, None, MAX_UINT32))
            continue
        applied = check.applied
        limits = applied.rule.limits if applied is not None else ()
        if applied is None or not limits:
            statuses.append(DescriptorStatus(Code.OK))
            continue
        if len(limits) == 1:
            usage = usages[at]
            at += 1
            if usage.error:
                statuses.append(DescriptorStatus(Code.OK, error=usage.error))
                continue
            status = _status(applied, limits[0], usage, check.hits, settings=settings,
                             stats=stats)
        else:
            window_usages = usages[at : at + len(limits)]
            at += len(limits)
            error = next((u.error for u in window_usages if u.error), "")
            if error:
                statuses.append(DescriptorStatus(Code.OK, error=error))
                continue
            windows = tuple(
                _status(applied, limit, usage, check.hits, settings=settings, stats=None)
                for limit, usage in zip(limits, window_usages, strict=True)
            )
            chosen = most_restrictive(windows)
            deciding = windows.index(chosen)
            # Stats count the deciding window (one count per request, as for one limit).
            _status(applied, limits[deciding], window_usages[deciding], check.hits,
                    settings=settings, stats=stats)
            status = replace(chosen, windows=windows)
        statuses.append(status)
        if settings.quota_mode or applied.rule.quota_mode:
            total_quota += 1
            if status.code is Code.OVER_LIMIT:
                failed_quota += 1
        elif status.code is Code.OVER_LIMIT:
            failed_rate += 1
    over = failed_rate > 0 or (total_quota > 0 and failed_quota == total_quota)
    code = Code.OVER_LIMIT if over else Code.OK
    if over and settings.shadow_mode:
        code = Code.OK
        if stats is not None:
            stats.add("service", "global_shadow_mode")
    headers: tuple[tuple[str, str], ...] = ()
    if settings.headers is not None:
        names = settings.headers
        headers = rate_limit_headers(statuses, HeaderStyle.REFERENCE,
                                     (names.limit, names.remaining, names.reset))
    return Answer(code, tuple(statuses), headers)


def _status(
    applied: AppliedLimit,
    limit: Limit,
    usage: Usage,
    hits: int,
    *,
    settings: DecisionSettings,
    stats: Stats | None,
) -> DescriptorStatus:
    rule = applied.rule
    key = applied.stats_key
    threshold = limit.capacity
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


def fail_open(query: RateLimitQuery) -> Answer:
    """The answer when the store is down and the operator chose fail-open."""
    statuses = tuple(DescriptorStatus(Code.OK) for _ in query.descriptors)
    return Answer(Code.OK, statuses, failed_open=True)
