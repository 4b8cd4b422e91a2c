"""One request through every phase, for every door: the only place that sequences them.

    route -> [limits before authentication] -> identity + authorization
          -> [limits after authorization] -> validation -> Answer

The phases are the pure engine's; the stages in brackets count hits (I/O, through
`authz_service.limits.stage`), and so does the one-time key refetch for a token with
an unknown key id. Doors turn a wire request into a RequestContext, call `decide`,
and turn the Answer into their wire answer; nothing here knows which door asked.
Decisions are counted and timed here, once, whatever the door.

`decide` is written to finish without suspending when nothing needs I/O (a cached
token, no limits or the memory store): the HTTP door runs it eagerly (tollgate.eager)
and only an answer that really waits costs a task. So no `asyncio.timeout()` here
(it needs a current task): use `asyncio.wait_for`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace

from authz_service.decision_log import DecisionLog
from authz_service.keys.registry import KeyRegistry
from authz_service.limits.actions import LimitInput
from authz_service.limits.compiled import CompiledSet
from authz_service.limits.stage import HEADER_NAMES, LimitCounter, StageResult
from authz_service.metrics import CHECK_SECONDS, DECISIONS, LIMIT_OUTCOMES
from authz_service.models import Allow, Answer, Deny, Identity, RequestContext
from authz_service.policy import engine
from authz_service.policy.compiled import CompiledPolicy
from authz_service.policy.denials import internal_error
from authz_service.policy.routes import CompiledRoute
from ratelimit_service.decision import DescriptorStatus
from ratelimit_service.headers import rate_limit_headers
from ratelimit_service.stores.memory import MemoryStore
from tollgate.reload import ConfigHolder

log = logging.getLogger("authz.pipeline")


class CheckUnavailable(Exception):
    """The policy says `on_error: error`: the door answers with its transport's error
    (gRPC UNAVAILABLE, HTTP 503), and Envoy's failure mode decides."""


class Pipeline:
    def __init__(
        self,
        holder: ConfigHolder[CompiledPolicy],
        keys: KeyRegistry,
        counter: LimitCounter | None = None,
        clock: Callable[[], float] = time.time,
        decision_log: DecisionLog | None = None,
    ) -> None:
        self.holder = holder
        self.keys = keys
        # No store configured: an in-memory one (a single replica's exact counts).
        self.counter = counter if counter is not None else LimitCounter(MemoryStore(),
                                                                        clock=clock)
        self.clock = clock
        self.decision_log = decision_log

    async def decide(self, ctx: RequestContext) -> Answer:
        """The answer for one request; never raises but CheckUnavailable."""
        started = time.perf_counter()
        policy = self.holder.current
        try:
            answer = await self._decide(policy, ctx)
        except Exception:
            # Fail closed: an internal error never lets a request through.
            log.exception("check failed", extra={"request_id": ctx.request_id})
            self._count("error", "internal_error", "")
            denial = internal_error()
            failed = Answer(denial)
            if self.decision_log is not None:
                # Recorded as answered: 503 when the door answers with its transport's error.
                logged = Answer(replace(denial, status=503)) if policy.fail_with_error \
                    else failed
                self.decision_log.offer(ctx, logged, time.perf_counter() - started)
            if policy.fail_with_error:
                raise CheckUnavailable from None
            return failed
        seconds = time.perf_counter() - started
        CHECK_SECONDS.observe(seconds)
        if self.decision_log is not None:
            self.decision_log.offer(ctx, answer, seconds)
        decision = answer.decision
        if isinstance(decision, Deny):
            self._count("deny", decision.code, decision.route)
            if log.isEnabledFor(logging.DEBUG):
                log.debug("denied", extra={
                    "code": decision.code, "route": decision.route,
                    "request_id": ctx.request_id})
        else:
            self._count("allow", "ok", decision.route)
        return answer

    async def _decide(self, policy: CompiledPolicy, ctx: RequestContext) -> Answer:
        now = self.clock()
        routed = engine.route(policy, ctx)
        if not isinstance(routed, CompiledRoute):
            return Answer(routed)
        limits = policy.limits.for_route(routed.name) if policy.limits is not None else None
        before: StageResult | None = None
        if limits is not None and limits.before:
            before = await self._limit(policy, limits.before, LimitInput(ctx, routed.name))
            if before.denial is not None:
                return Answer(before.denial, limit_outcomes=before.outcomes)

        proven = engine.authorize(policy, routed, ctx, now)
        if isinstance(proven, engine.NeedKeys):
            if await self.keys.refresh_for_unknown_kid(proven.source):
                proven = engine.authorize(policy, routed, ctx, self.clock(), may_refetch=False)
            if isinstance(proven, engine.NeedKeys):  # the refetch did not bring the key
                proven = proven.fallback
        if not isinstance(proven, Identity):
            return Answer(proven, limit_outcomes=before.outcomes if before else ())

        after: StageResult | None = None
        if limits is not None and limits.after:
            after = await self._limit(policy, limits.after, LimitInput(ctx, routed.name, proven),
                                      before.statuses if before is not None else ())
        outcomes = (before.outcomes if before else ()) + (after.outcomes if after else ())
        if after is not None and after.denial is not None:
            return Answer(after.denial, identity=proven, limit_outcomes=outcomes)

        decision = engine.finish(policy, routed, proven, ctx)
        if policy.limits is None or not isinstance(decision, Allow):
            return Answer(decision, identity=proven, limit_outcomes=outcomes)
        statuses = (before.statuses if before else ()) + (after.statuses if after else ())
        headers = rate_limit_headers(statuses, policy.limits.style, HEADER_NAMES) \
            if statuses else ()
        return Answer(decision, headers, identity=proven, limit_outcomes=outcomes)

    async def _limit(
        self,
        policy: CompiledPolicy,
        sets: tuple[CompiledSet, ...],
        inp: LimitInput,
        earlier: tuple[DescriptorStatus, ...] = (),
    ) -> StageResult:
        limits = policy.limits
        if limits is None:  # the caller checked; keeps the types honest under -O
            return StageResult()
        result = await self.counter.run(limits, sets, inp, earlier)
        for outcome in result.outcomes:
            LIMIT_OUTCOMES.inc(outcome)
        return result

    @staticmethod
    def _count(decision: str, code: str, route: str) -> None:
        # Codes and routes come from the code and the config: bounded label values.
        DECISIONS.inc((decision, code, route))

