"""Limits selected by identity: a plan or tenant entry picks the limit (rate_limit_by),
through real gRPC: one rule for every plan, one counter per subject, a default for
plans the config does not list."""

from __future__ import annotations

import asyncio
from pathlib import Path

from ratelimit_service.config import load_rules
from tests.kits.ratelimit_kit import OK, OVER, descriptor, make_limiter, request, serve

FIXTURE = Path(__file__).parent / "fixtures" / "valid" / "limit_by_plan.yaml"
MAX_UINT32 = 2**32 - 1


def plan_of(plan: str, subject: str) -> object:
    return descriptor(("plan", plan), ("subject", subject))


def test_the_plan_entry_selects_the_limit_with_a_default_for_unknown_plans() -> None:
    limiter = make_limiter(load_rules(FIXTURE))

    async def main() -> None:
        async with serve(limiter) as served:
            limits = {}
            for plan in ("gold", "free", "bronze", ""):
                response = await served.call(request("test-domain", plan_of(plan, "alice")))
                limits[plan] = response.statuses[0].current_limit.requests_per_unit
            assert limits == {"gold": 600, "free": 60, "bronze": 10, "": 10}
            internal = await served.call(request("test-domain", plan_of("internal", "ops")))
            status = internal.statuses[0]
            assert status.limit_remaining == MAX_UINT32
            assert not status.HasField("current_limit")

    asyncio.run(main())


def test_each_subject_has_its_own_counter_under_its_plans_limit() -> None:
    limiter = make_limiter(load_rules(FIXTURE))

    async def main() -> None:
        async with serve(limiter) as served:
            bob = request("test-domain", plan_of("unknown-plan", "bob"))
            assert await served.codes(bob, 11) == [OK] * 10 + [OVER]
            carol = request("test-domain", plan_of("unknown-plan", "carol"))
            assert await served.codes(carol, 1) == [OK]
            # bob on the free plan counts separately (the plan is part of the descriptor).
            free = await served.call(request("test-domain", plan_of("free", "bob")))
            assert free.statuses[0].limit_remaining == 59

    asyncio.run(main())


def test_a_plan_can_select_stacked_windows() -> None:
    limiter = make_limiter(load_rules(FIXTURE))

    async def main() -> None:
        async with serve(limiter) as served:
            trial = request("test-domain", plan_of("trial", "dave"))
            responses = [await served.call(trial) for _ in range(3)]
            assert [r.overall_code for r in responses] == [OK, OK, OVER]
            assert responses[0].statuses[0].current_limit.requests_per_unit == 2

    asyncio.run(main())


def test_the_selecting_entry_can_be_the_counted_one() -> None:
    limiter = make_limiter(load_rules(FIXTURE))

    async def main() -> None:
        async with serve(limiter) as served:
            acme = request("test-domain", descriptor(("tenant", "acme")))
            other = request("test-domain", descriptor(("tenant", "initech")))
            assert await served.codes(acme, 6) == [OK] * 5 + [OVER]
            assert await served.codes(other, 3) == [OK, OK, OVER]

    asyncio.run(main())
