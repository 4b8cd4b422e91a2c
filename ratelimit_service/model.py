"""Plain request/limit types shared by the pure decision code (no gRPC, no Redis)."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


class Unit(enum.IntEnum):
    """Rate-limit units, numbered as Envoy's `RateLimitResponse.RateLimit.Unit`."""

    SECOND = 1
    MINUTE = 2
    HOUR = 3
    DAY = 4
    MONTH = 5
    YEAR = 6
    WEEK = 7

    @property
    def seconds(self) -> int:
        """Window length, as the reference defines it (a month is 30 days, a year 365)."""
        return _UNIT_SECONDS[self]


_UNIT_SECONDS = {
    Unit.SECOND: 1,
    Unit.MINUTE: 60,
    Unit.HOUR: 3600,
    Unit.DAY: 86400,
    Unit.WEEK: 7 * 86400,
    Unit.MONTH: 30 * 86400,
    Unit.YEAR: 365 * 86400,
}


class Algorithm(enum.StrEnum):
    """How hits are counted; `fixed_window` is the reference's behaviour."""

    FIXED_WINDOW = "fixed_window"
    SLIDING_WINDOW = "sliding_window"
    GCRA = "gcra"


@dataclass(frozen=True, slots=True)
class Limit:
    """A number of requests per unit, with the algorithm that counts them."""

    requests_per_unit: int
    unit: Unit
    name: str = ""
    algorithm: Algorithm = Algorithm.FIXED_WINDOW


@dataclass(frozen=True, slots=True)
class Rule:
    """A compiled `rate_limit` node of the config tree."""

    full_key: str  # "domain.key_value.subkey" as the reference names stats
    limit: Limit | None  # None only when unlimited
    name: str = ""
    unlimited: bool = False
    shadow_mode: bool = False
    quota_mode: bool = False
    replaces: tuple[str, ...] = ()
    detailed_metric: bool = False
    metadata: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Entry:
    key: str
    value: str


@dataclass(frozen=True, slots=True)
class Descriptor:
    """One descriptor of a request: its entries, Envoy's optional limit override and cost."""

    entries: tuple[Entry, ...]
    limit_override: Limit | None = None
    hits_addend: int | None = None  # None: not set, use the request's


@dataclass(frozen=True, slots=True)
class RateLimitQuery:
    """A ShouldRateLimit request in neutral form."""

    domain: str
    descriptors: tuple[Descriptor, ...]
    hits_addend: int = 0

    def hits_for(self, index: int) -> int:
        """The reference's rule: descriptor hits_addend if set (0 = check only), else the
        request's, where 0 means 1."""
        own = self.descriptors[index].hits_addend
        if own is not None:
            return own
        return max(1, self.hits_addend)


@dataclass(frozen=True, slots=True)
class AppliedLimit:
    """What the rule tree found for one descriptor: the rule and how its counter is named."""

    rule: Rule
    counter_entries: tuple[Entry, ...]  # values replaced by share_threshold patterns
    stats_key: str


@dataclass(frozen=True, slots=True)
class Usage:
    """A counter's state around this request's hits, in the algorithm's own terms.

    `after > limit` means over the limit; `before` is what was used before the hits.
    `reset_seconds` is how long until the limit is fully available again.
    """

    before: int
    after: int
    reset_seconds: int
    from_local_cache: bool = False


@dataclass(frozen=True, slots=True)
class CounterOp:
    """One counter update a store must perform atomically."""

    key: str  # the counter's identity without the window (prefix + domain + entries)
    hits: int
    limit: Limit


@dataclass
class Stats:
    """In-process counters per stats key, named as the reference's statsd counters.

    `detailed_metric` and `value_to_metric` put request values in stats keys; past
    `max_keys` distinct counters, new ones are summed under `overflow.<name>` so a
    stream of distinct values cannot grow memory without bound.
    """

    counters: dict[str, int] = field(default_factory=dict)
    max_keys: int = 10_000

    def add(self, key: str, name: str, amount: int = 1) -> None:
        if amount:
            full = f"{key}.{name}"
            counters = self.counters
            if full not in counters and len(counters) >= self.max_keys:
                full = f"overflow.{name}"
            counters[full] = counters.get(full, 0) + amount

    def get(self, key: str, name: str) -> int:
        return self.counters.get(f"{key}.{name}", 0)
