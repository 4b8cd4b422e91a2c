"""Reading and resetting the counters of one descriptor (the admin API's engine part).

Pure over the limiter's parts: the rule lookup of `decision.plan`, each algorithm's
keys, and the store's `peek` (nothing written, no local cache) and `delete`. The
answer is what a request with this descriptor would see, before it is charged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, cast

from ratelimit_service.algorithms import algorithm_for
from ratelimit_service.decision import RequestError, counter_ops, plan
from ratelimit_service.limiter import RateLimiter
from ratelimit_service.models import Descriptor, Entry, RateLimitQuery
from ratelimit_service.stores import InspectableStore


@dataclass(frozen=True, slots=True)
class WindowUsage:
    name: str
    unit: str
    requests_per_unit: int
    capacity: int
    algorithm: str
    used: int
    remaining: int
    reset_seconds: int
    keys: tuple[str, ...]


def _query(domain: str, entries: Sequence[tuple[str, str]]) -> RateLimitQuery:
    if not entries:
        raise RequestError("a descriptor needs at least one entry")
    descriptor = Descriptor(tuple(Entry(k, v) for k, v in entries), hits_addend=0)
    return RateLimitQuery(domain, (descriptor,))


def _ops(limiter: RateLimiter, query: RateLimitQuery) -> tuple[list[Any], bool]:
    checks = plan(limiter.rules.current, query)
    ops = counter_ops(checks, query.domain, limiter.settings.key_prefix)
    return ops, checks[0].unlimited


async def usage(limiter: RateLimiter, domain: str,
                entries: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """The limit(s) that apply to this descriptor and how much of each is used."""
    query = _query(domain, entries)
    ops, unlimited = _ops(limiter, query)
    now = limiter.clock()
    store = cast(InspectableStore, limiter.store)  # both stores can peek and delete
    usages = await store.peek(ops, now) if ops else []
    windows = []
    for op, found in zip(ops, usages, strict=True):
        if found.error:
            raise RuntimeError(found.error)
        limit = op.limit
        windows.append(WindowUsage(
            name=limit.name, unit=limit.unit.name.lower(),
            requests_per_unit=limit.requests_per_unit, capacity=limit.capacity,
            algorithm=limit.algorithm, used=found.after,
            remaining=max(0, limit.capacity - found.after), reset_seconds=found.reset_seconds,
            keys=algorithm_for(limit.algorithm).keys(op.key, limit, now),
        ))
    return {
        "domain": domain,
        "entries": [list(e) for e in entries],
        "limited": bool(windows),
        "unlimited": unlimited,
        "windows": [asdict(w) for w in windows],
    }


async def reset(limiter: RateLimiter, domain: str,
                entries: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """Delete this descriptor's current counters (every window); a fresh start."""
    query = _query(domain, entries)
    ops, _ = _ops(limiter, query)
    now = limiter.clock()
    keys = [key for op in ops
            for key in algorithm_for(op.limit.algorithm).keys(op.key, op.limit, now)]
    store = cast(InspectableStore, limiter.store)
    deleted = await store.delete(keys) if keys else 0
    return {"domain": domain, "entries": [list(e) for e in entries], "keys": keys,
            "deleted": deleted}
