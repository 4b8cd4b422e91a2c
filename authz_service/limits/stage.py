"""Running one limit stage of the pipeline: build its descriptors, count them in one
store call, and turn the statuses into a 429 (or a 503 the operator asked for).

The only I/O of the rate-limit part of authz: `RateLimiter.should_rate_limit`, the
same call ratelimit-service makes, on the same store. Every set of the stage goes in
one query, so a stage costs at most one store round trip.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from authz_service.limits.actions import ADDRESS, IDENTITY, NONE, LimitInput
from authz_service.limits.compiled import CompiledLimits, CompiledSet, depends_on
from authz_service.models import Deny, Identity
from authz_service.policy import denials
from ratelimit_service.decision import Code, DecisionSettings, DescriptorStatus
from ratelimit_service.headers import rate_limit_headers, retry_after
from ratelimit_service.limiter import FailureMode, PlannedQuery, RateLimiter
from ratelimit_service.models import Descriptor, RateLimitQuery, Stats
from ratelimit_service.stores import CounterStore, StoreUnavailable
from tollgate.memo import Memo
from tollgate.reload import ConfigHolder

log = logging.getLogger("authz.limits")

OK = "ok"
OVER_LIMIT = "over_limit"
SHADOWED = "shadowed"  # over, but the set is in shadow mode: allowed
STORE_FAILED_OPEN = "store_failed_open"
STORE_FAILED_CLOSED = "store_failed_closed"


@dataclass(slots=True)  # per request: not frozen (see models.RequestContext)
class StageResult:
    """A stage's statuses (for the rate-limit headers), its denial if any, and each
    set's outcome (metrics and the decision log)."""

    statuses: tuple[DescriptorStatus, ...] = ()
    denial: Deny | None = None
    outcomes: tuple[tuple[str, str], ...] = ()  # (set name, outcome)


EMPTY = StageResult()
KEPT = 10_000  # bound on each cache of a snapshot
HEADER_NAMES = ("x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset")


class LimitCounter:
    """The service's counter store, and a RateLimiter per compiled rule snapshot."""

    def __init__(
        self,
        store: CounterStore,
        *,
        key_prefix: str = "",
        clock: Callable[[], float] = time.time,
        stats: Stats | None = None,
    ) -> None:
        self.store = store
        self.settings = DecisionSettings(key_prefix=key_prefix)
        self.clock = clock
        self.stats = stats if stats is not None else Stats()
        self._current: _Snapshot | None = None
        self._last_failure_log = 0.0

    def limiter(self, limits: CompiledLimits) -> RateLimiter:
        return self._snapshot(limits).limiter

    def _snapshot(self, limits: CompiledLimits) -> _Snapshot:
        current = self._current
        if current is None or current.limits is not limits:
            limiter = RateLimiter(
                ConfigHolder(limits.rules), self.store, self.settings,
                failure_mode=FailureMode.CLOSED, clock=self.clock, stats=self.stats,
            )
            current = self._current = _Snapshot(limits, limiter)
        return current

    async def run(
        self,
        limits: CompiledLimits,
        sets: Sequence[CompiledSet],
        inp: LimitInput,
        earlier: tuple[DescriptorStatus, ...] = (),
    ) -> StageResult:
        """Count this stage's descriptors; `earlier`: the statuses of the stage before,
        so a 429 shows every limit the request met."""
        snapshot = self._snapshot(limits)
        stage = snapshot.stage(sets, inp)
        if stage is None:
            return EMPTY
        try:
            decision = await snapshot.limiter.decide_planned(stage[0])
        except StoreUnavailable as exc:
            return self._store_failed(stage[1], exc, inp.route)
        return self._result(limits, stage, decision.statuses, inp.route, earlier)

    def run_now(
        self,
        limits: CompiledLimits,
        sets: Sequence[CompiledSet],
        inp: LimitInput,
        earlier: tuple[DescriptorStatus, ...] = (),
    ) -> StageResult | None:
        """`run` without a coroutine when the store counts without I/O (memory, or a
        leased store while its leases last); None when it does not: await `run` then."""
        snapshot = self._snapshot(limits)
        limiter = snapshot.limiter
        if not limiter.counts_now:
            return None
        stage = snapshot.stage(sets, inp)
        if stage is None:
            return EMPTY
        try:
            decision = limiter.decide_now(stage[0])
        except StoreUnavailable as exc:
            return self._store_failed(stage[1], exc, inp.route)
        if decision is None:
            return None
        return self._result(limits, stage, decision.statuses, inp.route, earlier)

    @staticmethod
    def _result(
        limits: CompiledLimits,
        stage: PlannedStage,
        statuses: tuple[DescriptorStatus, ...],
        route: str,
        earlier: tuple[DescriptorStatus, ...],
    ) -> StageResult:
        for status in statuses:
            if status.code is Code.OVER_LIMIT:
                break
        else:  # every descriptor within its limits
            return StageResult(statuses, None, stage[2])
        outcomes: list[tuple[str, str]] = []
        limiting: list[DescriptorStatus] = []
        for limit_set, first, count in stage[1]:
            mine = statuses[first : first + count]
            over = [s for s in mine if s.code is Code.OVER_LIMIT]
            if not over:
                outcomes.append((limit_set.name, OK))
            elif limit_set.shadow:
                outcomes.append((limit_set.name, SHADOWED))
            else:
                outcomes.append((limit_set.name, OVER_LIMIT))
                limiting.extend(over)
        if not limiting:
            return StageResult(statuses, None, tuple(outcomes))
        headers = rate_limit_headers(earlier + statuses, limits.style, HEADER_NAMES)
        wait = retry_after(limiting) or 1
        denial = denials.rate_limited(wait, headers, route)
        return StageResult(statuses, denial, tuple(outcomes))

    def _store_failed(
        self, per_set: PerSet, exc: StoreUnavailable, route: str
    ) -> StageResult:
        closed = [s.name for s, _, _ in per_set if not s.fail_open]
        now = time.monotonic()
        if now - self._last_failure_log >= 1.0:  # one line per second, not per request
            self._last_failure_log = now
            log.warning("rate-limit store unavailable", extra={
                "error": str(exc), "denying_sets": closed})
        outcomes = tuple(
            (s.name, STORE_FAILED_OPEN if s.fail_open else STORE_FAILED_CLOSED)
            for s, _, _ in per_set
        )
        denial = denials.limits_unavailable(route) if closed else None
        return StageResult((), denial, outcomes)


PerSet = tuple[tuple[CompiledSet, int, int], ...]  # (set, first descriptor, how many)
# The planned query, each set's place in it, and the outcomes when every set is within.
PlannedStage = tuple[PlannedQuery, PerSet, tuple[tuple[str, str], ...]]
NO_PLAN: tuple[()] = ()  # kept too: these inputs build no descriptor


class _Snapshot:
    """One compiled rules snapshot's limiter, and what is kept for the next request: a
    stage's planned query (descriptors built, rules looked up) by what its sets depend
    on: the identity, the client address, or nothing but the route. A cached token's
    limit then costs the count and the answer only. A reload starts a new snapshot."""

    def __init__(self, limits: CompiledLimits, limiter: RateLimiter) -> None:
        self.limits = limits
        self.limiter = limiter
        self._by_identity: Memo[PlannedStage | tuple[()]] = Memo(KEPT)
        self._by_key: dict[tuple[int, str, str], PlannedStage | tuple[()]] = {}
        self._reads: dict[int, str] = {}  # id(sets) -> what they read (compiled.depends_on)
        # The last identity-keyed stage asked for: (identity, sets, route, its plan).
        self._last: tuple[Identity | None, Sequence[CompiledSet] | None, str,
                          PlannedStage | None] = (None, None, "", None)

    def stage(self, sets: Sequence[CompiledSet], inp: LimitInput) -> PlannedStage | None:
        """This stage's planned query for this request (None: no descriptor at all)."""
        last = self._last  # the same caller again (a client's burst): no lookup at all
        if last[0] is inp.identity and last[1] is sets and last[2] == inp.route:
            return last[3]
        reads = self._reads.get(id(sets))
        if reads is None:  # the tuples of sets live as long as this snapshot's limits
            reads = self._reads[id(sets)] = depends_on({s.reads for s in sets})
        if reads == IDENTITY and inp.identity is not None:
            key = (id(sets), inp.route)
            kept = self._by_identity.get(inp.identity, key)
            if kept is None:
                kept = self._by_identity.put(inp.identity, key, self._plan(sets, inp) or NO_PLAN)
            self._last = (inp.identity, sets, inp.route, kept or None)
            return kept or None
        if reads in (ADDRESS, NONE):
            by_key = (id(sets), inp.route, inp.ctx.source_address if reads == ADDRESS else "")
            found = self._by_key.get(by_key)
            if found is None:
                if len(self._by_key) >= KEPT:
                    self._by_key.clear()
                found = self._by_key[by_key] = self._plan(sets, inp) or NO_PLAN
            return found or None
        return self._plan(sets, inp)

    def _plan(self, sets: Sequence[CompiledSet], inp: LimitInput) -> PlannedStage | None:
        per_set: list[tuple[CompiledSet, int, int]] = []
        descriptors: list[Descriptor] = []
        for limit_set in sets:
            built = limit_set.descriptors_for(inp)
            if built:
                per_set.append((limit_set, len(descriptors), len(built)))
                descriptors.extend(built)
        if not descriptors:
            return None
        query = RateLimitQuery(self.limits.domain, tuple(descriptors))
        all_ok = tuple((limit_set.name, OK) for limit_set, _, _ in per_set)
        return self.limiter.plan_query(query), tuple(per_set), all_ok
