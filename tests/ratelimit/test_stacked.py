"""Stacked limits: several windows on one descriptor (e.g. per second and per day).

Charged atomically in one round trip (one EVALSHA on a single Redis, one script per
slot on a cluster: the windows share a hash tag), most restrictive window reported,
every window in the headers, and a request over one window not charged to the others
unless the rule says `charge_all_windows`.
"""

from __future__ import annotations

import asyncio
import itertools

import pytest
from redis.crc import key_slot

from ratelimit_service.adapter import to_query
from ratelimit_service.decision import Code, DecisionSettings, HeaderNames
from ratelimit_service.headers import HeaderStyle, rate_limit_headers, retry_after
from ratelimit_service.limiter import FailureMode, RateLimiter
from ratelimit_service.models import Unit
from ratelimit_service.stores import CounterStore
from ratelimit_service.stores.cluster import connect_cluster
from ratelimit_service.stores.memory import MemoryStore
from ratelimit_service.stores.redis import RedisOptions, RedisStore, connect_single
from tests.kits.ratelimit_kit import (
    OK,
    OVER,
    Clock,
    descriptor,
    make_limiter,
    request,
    rules_from,
    serve,
)
from tests.kits.ratelimit_kit import request as rls_request
from tests.kits.redis_procs import RedisCluster, RedisProcess

CONFIG = """
domain: st
descriptors:
  - key: api_key
    rate_limits:
      - {unit: second, requests_per_unit: 3, name: burst}
      - {unit: minute, requests_per_unit: 5, name: minutely}
  - key: greedy
    charge_all_windows: true
    rate_limits:
      - {unit: second, requests_per_unit: 3}
      - {unit: minute, requests_per_unit: 5}
  - key: tenant
    rate_limits:
      - {unit: minute, requests_per_unit: 20}
      - {unit: hour, requests_per_unit: 30, algorithm: sliding_window}
  - key: ip
    rate_limit: {unit: second, requests_per_unit: 1000}
"""

_tags = itertools.count()


def tag() -> str:
    return f"t{next(_tags)}"


def store_for(kind: str, request_: pytest.FixtureRequest) -> CounterStore:
    if kind == "memory":
        return MemoryStore()
    options = RedisOptions(timeout=5)
    if kind == "redis":
        server: RedisProcess = request_.getfixturevalue("redis_server")
        return RedisStore(connect_single(server.url, options))
    cluster: RedisCluster = request_.getfixturevalue("redis_cluster")
    return RedisStore(connect_cluster([("127.0.0.1", n.port) for n in cluster.nodes], options))


def test_the_most_restrictive_window_decides_and_the_others_are_not_charged() -> None:
    clock = Clock()
    limiter = make_limiter(rules_from(CONFIG), clock=clock)

    async def main() -> None:
        query = to_query(request("st", descriptor(("api_key", "k"))))
        decisions = [await limiter.should_rate_limit(query) for _ in range(4)]
        assert [d.overall_code for d in decisions] == [Code.OK] * 3 + [Code.OVER_LIMIT]
        first, third, fourth = decisions[0].statuses[0], decisions[2].statuses[0], \
            decisions[3].statuses[0]
        # Both windows are reported; the descriptor's status is the tighter one.
        assert [(w.current_limit.name, w.limit_remaining) for w in first.windows] == [  # type: ignore[union-attr]
            ("burst", 2), ("minutely", 4)]
        assert (first.current_limit.name, first.limit_remaining) == ("burst", 2)  # type: ignore[union-attr]
        assert (third.current_limit.name, third.limit_remaining) == ("burst", 0)  # type: ignore[union-attr]
        assert (fourth.code, fourth.current_limit.unit) == (Code.OVER_LIMIT, Unit.SECOND)  # type: ignore[union-attr]
        # The rejected 4th hit did not use the minute window: 2 left there, not 1.
        clock.advance(1)
        codes = [(await limiter.should_rate_limit(query)).overall_code for _ in range(3)]
        assert codes == [Code.OK, Code.OK, Code.OVER_LIMIT]
        over = (await limiter.should_rate_limit(query)).statuses[0]
        assert (over.current_limit.name, over.duration_until_reset) == ("minutely", 49)  # type: ignore[union-attr]

    asyncio.run(main())


def test_charge_all_windows_charges_a_rejected_hit_everywhere() -> None:
    clock = Clock()
    limiter = make_limiter(rules_from(CONFIG), clock=clock)

    async def main() -> None:
        query = to_query(request("st", descriptor(("greedy", "g"))))
        for _ in range(4):
            await limiter.should_rate_limit(query)
        clock.advance(1)
        # 4 hits went into the minute window, so only 1 is left.
        codes = [(await limiter.should_rate_limit(query)).overall_code for _ in range(2)]
        assert codes == [Code.OK, Code.OVER_LIMIT]

    asyncio.run(main())


def test_every_window_appears_in_the_headers() -> None:
    limiter = make_limiter(rules_from(CONFIG),
                           settings=DecisionSettings(headers=HeaderNames()))

    async def main() -> None:
        query = to_query(request("st", descriptor(("api_key", "h")), descriptor(("ip", "1"))))
        decision = await limiter.should_rate_limit(query)
        assert decision.headers == (
            ("X-RateLimit-Limit", "3"), ("X-RateLimit-Remaining", "2"),
            ("X-RateLimit-Reset", "1"),
        )
        draft = dict(rate_limit_headers(decision.statuses, HeaderStyle.DRAFT03))
        assert draft["X-RateLimit-Limit"] == (
            '3, 3;w=1;name="burst", 5;w=60;name="minutely", 1000;w=1'
        )
        ietf = dict(rate_limit_headers(decision.statuses, HeaderStyle.IETF))
        assert ietf["RateLimit-Policy"] == (
            '"burst";q=3;w=1, "minutely";q=5;w=60, "1000-per-second";q=1000;w=1'
        )
        assert ietf["RateLimit"] == '"burst";r=2;t=1'
        for _ in range(5):
            decision = await limiter.should_rate_limit(query)
        assert retry_after(decision.statuses) == 1

    asyncio.run(main())


@pytest.mark.integration
def test_one_evalsha_per_request_with_stacked_windows(redis_server: RedisProcess) -> None:
    async def main() -> None:
        store = RedisStore(connect_single(redis_server.url, RedisOptions(timeout=5)))
        limiter = make_limiter(rules_from(CONFIG), store=store)
        query = to_query(request("st", descriptor(("api_key", "r")), descriptor(("tenant", "r")),
                                 descriptor(("ip", "r"))))
        await limiter.should_rate_limit(query)  # loads the script (EVALSHA + EVAL)
        before = redis_server.command_calls()
        for _ in range(5):
            await limiter.should_rate_limit(query)
        after = redis_server.command_calls()
        assert after["evalsha"] - before["evalsha"] == 5
        assert after.get("eval", 0) == before.get("eval", 0)
        await store.close()

    asyncio.run(main())


@pytest.mark.integration
def test_stacked_windows_share_one_slot_and_one_script_on_a_cluster(
    redis_cluster: RedisCluster,
) -> None:
    async def main() -> None:
        nodes = [("127.0.0.1", n.port) for n in redis_cluster.nodes]
        store = RedisStore(connect_cluster(nodes, RedisOptions(timeout=5)))
        limiter = make_limiter(rules_from(CONFIG), store=store)
        key = tag()
        query = to_query(request("st", descriptor(("tenant", key))))
        await limiter.should_rate_limit(query)
        sent = store.calls_sent
        for _ in range(5):
            await limiter.should_rate_limit(query)
        assert store.calls_sent - sent == 5  # one script per request, not one per window
        tagged = "{st_tenant_" + key + "_}"
        assert len({key_slot(f"{tagged}minute_1".encode()),
                    key_slot(f"{tagged}hour_1".encode())}) == 1
        await store.close()

    asyncio.run(main())


@pytest.mark.parametrize(
    "kind", ["memory", pytest.param("redis", marks=pytest.mark.integration),
             pytest.param("cluster", marks=pytest.mark.integration)]
)
def test_requests_merged_into_one_script_call_keep_their_own_windows(
    kind: str, request: pytest.FixtureRequest
) -> None:
    """200 decisions started together share script calls; each request's windows are
    still decided on their own: exactly 20 admitted, and the 180 rejected ones left
    the hour window alone (10 of its 30 remain)."""
    store = store_for(kind, request)
    clock = Clock()
    limiter = make_limiter(rules_from(CONFIG), store=store, clock=clock,
                           failure_mode=FailureMode.CLOSED)
    key = tag()

    async def main() -> None:
        query = to_query(rls_request("st", descriptor(("tenant", key))))
        decisions = await asyncio.gather(*(limiter.should_rate_limit(query) for _ in range(200)))
        assert sum(1 for d in decisions if d.overall_code is Code.OK) == 20
        if isinstance(store, RedisStore):
            assert store.calls_sent <= 2
        clock.advance(60)
        decisions = await asyncio.gather(*(limiter.should_rate_limit(query) for _ in range(50)))
        assert sum(1 for d in decisions if d.overall_code is Code.OK) == 10
        await store.close()

    asyncio.run(main())


@pytest.mark.parametrize(
    "kind", ["memory", pytest.param("redis", marks=pytest.mark.integration),
             pytest.param("cluster", marks=pytest.mark.integration)]
)
def test_stacked_limits_are_exact_under_concurrency(
    kind: str, request: pytest.FixtureRequest
) -> None:
    """Many concurrent clients (two replicas on the shared stores): exactly the minute
    window's 20 admitted, then, rejected hits not charged, exactly the 10 the hour has left."""
    replicas = 1 if kind == "memory" else 2
    stores = [store_for(kind, request) for _ in range(replicas)]
    clock = Clock()
    limiters: list[RateLimiter] = [
        make_limiter(rules_from(CONFIG), store=s, clock=clock, failure_mode=FailureMode.CLOSED)
        for s in stores
    ]
    key = tag()

    async def main() -> None:
        async with serve(limiters[0]) as a, serve(limiters[-1]) as b:
            req = rls_request("st", descriptor(("tenant", key)), descriptor(("ip", key)))

            async def wave(n: int) -> int:
                calls = [(a if i % 2 else b).call(req) for i in range(n)]
                responses = await asyncio.gather(*calls)
                return sum(1 for r in responses if r.overall_code == OK)

            assert await wave(200) == 20
            clock.advance(60)
            assert await wave(200) == 10
            clock.advance(60)
            last = await a.call(req)
            assert last.overall_code == OVER
        for store in stores:
            await store.close()

    asyncio.run(main())
