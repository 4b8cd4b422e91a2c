"""Plain request/limit types shared by the pure decision code (no gRPC, no Redis)."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tollgate.memo import KeptText


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
    """Names of the built-in algorithms (`fixed_window` is the reference's behaviour).

    The registry in `ratelimit_service.algorithms` is the source of truth: a `Limit`
    names its algorithm by string, so an algorithm added there needs no entry here.
    """

    FIXED_WINDOW = "fixed_window"
    SLIDING_WINDOW = "sliding_window"
    GCRA = "gcra"


MAX_UINT32 = 2**32 - 1


@dataclass(frozen=True, slots=True)
class Limit:
    """A number of requests per unit, with the algorithm that counts them.

    `burst` is the bucket size of algorithms that have one (token_bucket); 0 means
    `requests_per_unit`. `capacity` is the number of hits a fresh limit admits at once.
    """

    requests_per_unit: int
    unit: Unit
    name: str = ""
    algorithm: str = Algorithm.FIXED_WINDOW
    burst: int = 0
    # Derived once, read on every request: the hits a fresh limit admits at once, and
    # the window's length (Unit.seconds).
    capacity: int = field(init=False, repr=False, compare=False)
    seconds: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "capacity", self.burst or self.requests_per_unit)
        object.__setattr__(self, "seconds", self.unit.seconds)


@dataclass(frozen=True, slots=True)
class Rule:
    """A compiled `rate_limit` (or `rate_limits`) node of the config tree.

    `limits` holds one window for a reference `rate_limit`, several for stacked limits
    (`rate_limits`), none when unlimited. With `charge_all_windows` false (the
    default) a request over one window is not charged to the others.
    """

    full_key: str  # "domain.key_value.subkey" as the reference names stats
    limits: tuple[Limit, ...]
    name: str = ""
    unlimited: bool = False
    shadow_mode: bool = False
    quota_mode: bool = False
    replaces: tuple[str, ...] = ()
    detailed_metric: bool = False
    metadata: Mapping[str, Any] | None = None
    charge_all_windows: bool = False

    @property
    def limit(self) -> Limit | None:
        """The first window (the only one for a reference `rate_limit`); None if unlimited."""
        return self.limits[0] if self.limits else None


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


# Built per request: not frozen (a frozen dataclass's __init__ costs ~1 µs more, one
# object.__setattr__ per field); nothing assigns to it once built.
@dataclass(slots=True)
class Usage:
    """A counter's state around this request's hits, in the algorithm's own terms.

    `after > limit.capacity` means over the limit; `before` is what was used before
    the hits. `reset_seconds` is how long until the limit is fully available again.
    A non-empty `error` means the store could not count this one counter (the other
    counters of the request are still answered): the operator's failure mode decides it.
    """

    before: int
    after: int
    reset_seconds: int
    from_local_cache: bool = False
    error: str = ""


def uncounted(error: str) -> Usage:
    """The Usage of a counter the store could not count."""
    return Usage(0, 0, 0, error=error)


@dataclass(frozen=True, slots=True)
class CounterOp:
    """One counter update a store must perform atomically.

    `group`: counters of one group follow the stop-increment rule together (see
    `ratelimit_service.charging`); -1 is a counter of its own.
    """

    key: str  # the counter's identity without the window (prefix + domain + entries)
    hits: int
    limit: Limit
    group: int = -1


@dataclass
class Stats:
    """In-process counters per stats key, named as the reference's statsd counters.

    `detailed_metric` and `value_to_metric` put request values in stats keys; past
    `max_keys` distinct counters, new ones are summed under `overflow.<name>` so a
    stream of distinct values cannot grow memory without bound.
    """

    counters: dict[str, int] = field(default_factory=dict)
    max_keys: int = 10_000
    # (key, name) -> "key.name": a request's counters are named once, not per hit
    # (bounded by characters: detailed_metric puts request values in keys).
    names: KeptText = field(default_factory=lambda: KeptText(256 * 1024), repr=False,
                            compare=False)

    def add(self, key: str, name: str, amount: int = 1) -> None:
        if amount:
            full = self.names.entries.get((key, name))
            if full is None:
                full = f"{key}.{name}"
                self.names.put((key, name), full, len(key) + len(full))
            counters = self.counters
            count = counters.get(full)
            if count is None:
                if len(counters) >= self.max_keys:
                    full = f"overflow.{name}"
                count = counters.get(full, 0)
            counters[full] = count + amount

    def get(self, key: str, name: str) -> int:
        return self.counters.get(f"{key}.{name}", 0)
