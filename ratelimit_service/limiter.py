"""One ShouldRateLimit decision: rule snapshot -> plan -> store -> decide.

The only await is the store call; the clock is injected so tests pin window edges.
What happens when the store fails is the operator's choice (`FailureMode`), applied
per descriptor: a counter the store could not count opens (or refuses) only its own
descriptor, so a descriptor already over its limit still answers OVER_LIMIT.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ratelimit_service.decision import (
    Answer,
    Check,
    DecisionSettings,
    counter_ops,
    decide,
    fail_open,
    plan,
)
from ratelimit_service.metadata import dynamic_metadata
from ratelimit_service.models import CounterOp, RateLimitQuery, Stats, Usage
from ratelimit_service.rules import RuleSet
from ratelimit_service.stores import CounterStore, StoreUnavailable
from tollgate.reload import ConfigHolder

log = logging.getLogger("ratelimit_service")


class FailureMode(enum.StrEnum):
    """open: answer OK (and count it); closed: gRPC UNAVAILABLE (Envoy's failure_mode_deny)."""

    OPEN = "open"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class PlannedQuery:
    query: RateLimitQuery
    checks: tuple[Check, ...]
    ops: tuple[CounterOp, ...]


class RateLimiter:
    """Decides requests against the current rules and a counter store."""

    def __init__(
        self,
        rules: ConfigHolder[RuleSet],
        store: CounterStore,
        settings: DecisionSettings,
        *,
        failure_mode: FailureMode = FailureMode.OPEN,
        clock: Callable[[], float] = time.time,
        stats: Stats | None = None,
    ) -> None:
        self.rules = rules
        self.store = store
        self.settings = settings
        self.failure_mode = failure_mode
        self.clock = clock
        self.stats = stats if stats is not None else Stats()
        self._last_failure_log = 0.0
        # A store that can count without I/O (memory; a leased store while its leases
        # last) is called directly: no coroutine.
        self._apply_now: Callable[[Sequence[CounterOp], float], list[Usage] | None] | None = \
            getattr(store, "apply_now", None)
        self.counts_now = self._apply_now is not None  # so decide_now may answer

    async def should_rate_limit(self, query: RateLimitQuery) -> Answer:
        """Raises RequestError for a malformed query, StoreUnavailable when failing closed."""
        return await self.decide_planned(self.plan_query(query))

    def plan_query(self, query: RateLimitQuery) -> PlannedQuery:
        """The rule lookups and counter operations of a query (pure, for the current rules):
        a caller that sees the same descriptors again may keep it and skip the lookups."""
        checks = plan(self.rules.current, query)
        ops = counter_ops(checks, query.domain, self.settings.key_prefix)
        return PlannedQuery(query, tuple(checks), tuple(ops))

    async def decide_planned(self, planned: PlannedQuery) -> Answer:
        """Count a planned query's operations now and decide (see should_rate_limit)."""
        if self._apply_now is not None or not planned.ops:
            answer = self.decide_now(planned)
            if answer is not None:
                return answer
        try:
            usages = await self.store.apply(planned.ops, self.clock())
        except Exception as exc:  # any store failure is an outage, never a crash
            return self._store_failed(planned.query, exc)
        return self._decided(planned, usages)

    def decide_now(self, planned: PlannedQuery) -> Answer | None:
        """`decide_planned` without a coroutine, for a store that `counts_now` (or a
        query with nothing to count); None when the store cannot count these without
        I/O this time (a lease ran out): await `decide_planned` then."""
        if not planned.ops:
            return self._decided(planned, [])
        apply_now = self._apply_now
        if apply_now is None:
            raise TypeError("this store counts with I/O: await decide_planned")
        try:
            usages = apply_now(planned.ops, self.clock())
        except Exception as exc:  # any store failure is an outage, never a crash
            return self._store_failed(planned.query, exc)
        return None if usages is None else self._decided(planned, usages)

    def _decided(self, planned: PlannedQuery, usages: list[Usage]) -> Answer:
        uncounted = False
        for usage in usages:
            if usage.error:  # the first one: raises StoreUnavailable when failing closed
                self._counter_failed(usage.error)
                uncounted = True
                break
        checks = planned.checks
        decision = decide(checks, usages, self.settings, self.stats)
        if uncounted:
            decision = dataclasses.replace(decision, failed_open=True)
        if self.settings.dynamic_metadata:
            metadata = dynamic_metadata(planned.query, checks, decision.statuses)
            decision = dataclasses.replace(decision, dynamic_metadata=metadata)
        return decision

    def _counter_failed(self, error: str) -> None:
        """Some counters of this request could not be counted: log, count, and fail
        closed (the whole request) or open (those descriptors only)."""
        self.stats.add("service", "store_error")
        self._log_failure(error, None)
        if self.failure_mode is FailureMode.CLOSED:
            raise StoreUnavailable(error)
        self.stats.add("service", "failure_mode_open")

    def _log_failure(self, error: str, exc: Exception | None) -> None:
        now = time.monotonic()
        if now - self._last_failure_log >= 1.0:  # one line per second, not per request
            self._last_failure_log = now
            log.warning(
                "counter store unavailable",
                extra={"error": error, "failure_mode": str(self.failure_mode)},
                # Anything but an outage is a bug in the store: keep its traceback.
                exc_info=exc if exc is not None and not isinstance(exc, StoreUnavailable)
                else None,
            )

    def _store_failed(self, query: RateLimitQuery, exc: Exception) -> Answer:
        self.stats.add("service", "store_error")
        self._log_failure(str(exc), exc)
        if self.failure_mode is FailureMode.OPEN:
            self.stats.add("service", "failure_mode_open")
            return fail_open(query)
        if isinstance(exc, StoreUnavailable):
            raise exc
        raise StoreUnavailable(str(exc)) from exc
