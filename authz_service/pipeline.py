"""One request through every phase, for every door: the only place that sequences them.

    route -> [limits before authentication] -> identity + authorization
          -> [limits after authorization] -> validation -> Answer

The phases are the pure engine's; the stages in brackets count hits (I/O, through
`authz_service.limits.stage`), and so do the one-time key refetch for a token with an
unknown key id, the introspection call for an opaque token not yet cached, and the
recording of a DPoP proof's jti in the replay store (`authz_service.identity.dpop_replay`)
once identity and authorization passed. Doors turn a wire request into a RequestContext,
call `decide`, and turn the Answer into their wire answer; nothing here knows which door
asked.
Decisions are counted and timed here, once, whatever the door.

`decide` is written to finish without suspending when nothing needs I/O (a cached
token, no limits or the memory store): the HTTP door runs it eagerly (tollgate.eager)
and only an answer that really waits costs a task. So no `asyncio.timeout()` here
(it needs a current task): use `asyncio.wait_for`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import replace

from authz_service.decision_log import DecisionLog
from authz_service.identity.base import Proven
from authz_service.identity.dpop_replay import (
    MemoryReplayStore,
    ReplayStore,
    ReplayStoreUnavailable,
)
from authz_service.keys.registry import KeyRegistry
from authz_service.limits.actions import LimitInput
from authz_service.limits.compiled import CompiledLimits, CompiledSet
from authz_service.limits.stage import HEADER_NAMES, LimitCounter, StageResult
from authz_service.metrics import CHECK_SECONDS, DECISIONS, LIMIT_OUTCOMES, WOULD_DENY
from authz_service.models import Allow, Answer, Deny, Identity, RequestContext
from authz_service.policy import engine
from authz_service.policy.compiled import CompiledPolicy
from authz_service.policy.denials import dpop_refusal, dpop_replay_unavailable, internal_error
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
        *,
        replay: ReplayStore | None = None,
        decision_log: DecisionLog | None = None,
    ) -> None:
        """`replay`: where spent DPoP proofs are remembered (default: this process);
        `decision_log`: where each decision is recorded (None: nowhere)."""
        self.holder = holder
        self.keys = keys
        # No store configured: an in-memory one (a single replica's exact counts).
        self.counter = counter if counter is not None else LimitCounter(MemoryStore(),
                                                                        clock=clock)
        self.clock = clock
        self.replay: ReplayStore = replay if replay is not None else MemoryReplayStore()
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
        answer = await self._phases(policy, ctx)
        if isinstance(answer.decision, Deny):  # shadow mode or the operator's shape
            self._settle(policy, ctx, answer)
        return answer

    @staticmethod
    def _settle(policy: CompiledPolicy, ctx: RequestContext, answer: Answer) -> None:
        name = answer.decision.route
        route = policy.routes_by_name.get(name) if name else None
        decision, shadowed = engine.settle(policy, route, answer.decision, ctx, answer.identity)
        if shadowed is not None:
            WOULD_DENY.inc((shadowed.code,))
            log.info("would deny", extra={"code": shadowed.code, "route": shadowed.route,
                                          "request_id": ctx.request_id})
        answer.decision = decision
        answer.shadowed = shadowed

    async def _phases(self, policy: CompiledPolicy, ctx: RequestContext) -> Answer:
        now = self.clock()
        routed = engine.route(policy, ctx)
        if not isinstance(routed, CompiledRoute):
            return Answer(routed)
        compiled = policy.limits
        limits = compiled.for_route(routed.name) if compiled is not None else None
        before: StageResult | None = None
        if compiled is not None and limits is not None and limits.before:
            inp = LimitInput(ctx, routed.name)
            before = self._limit_now(compiled, limits.before, inp) \
                or await self._limit(compiled, limits.before, inp)
            if before.denial is not None:
                return Answer(before.denial, limit_outcomes=before.outcomes)

        found = engine.authenticate(policy, routed, ctx, now)
        if isinstance(found, engine.NeedKeys | engine.NeedLookup):
            found = await self._after_io(policy, routed, ctx, found)
        proof = found if isinstance(found, Proven) else None
        proven = found.identity if isinstance(found, Proven) else found
        if not isinstance(proven, Identity):
            return Answer(engine.refused(routed, proven, ctx),
                          limit_outcomes=before.outcomes if before else ())
        refusal = engine.permit(policy, routed, proven, ctx)
        if proof is not None:
            # Spent whatever the policy says: a refusal a shadow route lets through must
            # not leave the proof reusable (a replay is never shadowed).
            spent = await self._spend(proof, policy.realm, routed.name)
            if spent is not None:
                return Answer(spent, identity=proven,
                              limit_outcomes=before.outcomes if before else ())
        if refusal is not None:
            return Answer(engine.refused(routed, refusal, ctx), identity=proven,
                          limit_outcomes=before.outcomes if before else ())

        after: StageResult | None = None
        if compiled is not None and limits is not None and limits.after:
            inp = LimitInput(ctx, routed.name, proven)
            earlier = before.statuses if before is not None else ()
            after = self._limit_now(compiled, limits.after, inp, earlier) \
                or await self._limit(compiled, limits.after, inp, earlier)
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

    async def _after_io(
        self,
        policy: CompiledPolicy,
        routed: CompiledRoute,
        ctx: RequestContext,
        waiting: engine.NeedKeys | engine.NeedLookup,
    ) -> Identity | Proven | Deny:
        """Authentication once more after the I/O it asked for: a key refetch for an
        unknown kid, or the lookups (introspection calls) of sources that had no cached
        answer. Each bounds its own wait; a second miss is answered with the fallback.
        A sender-constrained token is held to its binding in this second pass, a JWT's or
        an introspected one's alike: a DPoP proof is verified once the token's cnf.jkt is
        known, and the Proven it answers has its proof spent by the caller, as on a hit."""
        if isinstance(waiting, engine.NeedKeys):
            if not await self.keys.refresh_for_unknown_kid(waiting.source):
                return waiting.fallback
        elif len(waiting.lookups) == 1:
            await waiting.lookups[0]()
        else:
            await asyncio.gather(*(lookup() for lookup in waiting.lookups))
        again = engine.authenticate(policy, routed, ctx, self.clock(), may_refetch=False)
        return again.fallback if isinstance(again, engine.NeedKeys | engine.NeedLookup) else again

    async def _spend(self, proven: Proven, realm: str, route: str) -> Deny | None:
        """Record the request's DPoP proof; its denial when it was spent before (a
        replay) or the store cannot tell (never an allow on an unchecked proof)."""
        proof = proven.proof
        try:
            fresh = await self.replay.first_use(proof.replay_key, proof.expires, self.clock())
        except ReplayStoreUnavailable as exc:
            log.warning("DPoP replay store unavailable", extra={"error": str(exc)})
            return dpop_replay_unavailable(route)
        if fresh:
            return None
        return dpop_refusal(realm, "invalid_dpop_proof", "DPoP proof already used", proof.algs,
                            route)

    def _limit_now(
        self,
        limits: CompiledLimits,
        sets: tuple[CompiledSet, ...],
        inp: LimitInput,
        earlier: tuple[DescriptorStatus, ...] = (),
    ) -> StageResult | None:
        """The stage's result at once when the store counts without I/O (no coroutine);
        None when it does not (await `_limit`)."""
        result = self.counter.run_now(limits, sets, inp, earlier)
        if result is not None:
            for outcome in result.outcomes:
                LIMIT_OUTCOMES.inc(outcome)
        return result

    async def _limit(
        self,
        limits: CompiledLimits,
        sets: tuple[CompiledSet, ...],
        inp: LimitInput,
        earlier: tuple[DescriptorStatus, ...] = (),
    ) -> StageResult:
        """The stage's result when the store counts with I/O (after `_limit_now`)."""
        result = await self.counter.run(limits, sets, inp, earlier)
        for outcome in result.outcomes:
            LIMIT_OUTCOMES.inc(outcome)
        return result

    @staticmethod
    def _count(decision: str, code: str, route: str) -> None:
        # Codes and routes come from the code and the config: bounded label values.
        DECISIONS.inc((decision, code, route))

