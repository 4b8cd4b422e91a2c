"""Leased counting (stores/leases.py) against a real redis-server on a free port."""

from __future__ import annotations

import asyncio

import pytest

from ratelimit_service.adapter import to_query
from ratelimit_service.cli import parse_settings
from ratelimit_service.decision import Code
from ratelimit_service.models import Algorithm, CounterOp, Limit, Unit, Usage
from ratelimit_service.stores.factory import StoreSettings, build_store, check_store
from ratelimit_service.stores.leases import LeasedStore
from ratelimit_service.stores.redis import RedisOptions, RedisStore, connect_single
from tests.kits.ratelimit_kit import T0, Clock, descriptor, make_limiter, request, rules_from
from tests.kits.redis_procs import RedisProcess, cli
from tollgate.settings import SettingsError

pytestmark = pytest.mark.integration  # a real redis-server

HUNDRED = Limit(100, Unit.MINUTE)  # blocks of at most 10 (a tenth of the limit)
START = int(T0) // 60 * 60  # the window T0 falls in


def leased(server: RedisProcess, lease_hits: int = 50, *, cache: int = 0) -> LeasedStore:
    inner = RedisStore(connect_single(server.url, RedisOptions(timeout=0.5)),
                       local_cache_bytes=cache)
    return LeasedStore(inner, lease_hits)


def op(key: str = "rl_user_ann_", hits: int = 1, limit: Limit = HUNDRED,
       group: int = -1) -> CounterOp:
    return CounterOp(key, hits, limit, group)


async def one(store: LeasedStore, counter: CounterOp, now: float = T0) -> Usage:
    (usage,) = await store.apply([counter], now)
    assert not usage.error, usage.error
    return usage


def allowed(usages: list[Usage], limit: Limit = HUNDRED) -> int:
    return sum(u.after <= limit.capacity for u in usages)


def test_one_replica_allows_exactly_the_limit_with_a_trip_per_block(
    redis_server: RedisProcess,
) -> None:
    async def main() -> None:
        store = leased(redis_server)
        usages = [await one(store, op()) for _ in range(130)]
        assert allowed(usages) == 100
        # What the headers say is what was granted, hit by hit, as without leases.
        assert [u.after for u in usages[:100]] == list(range(1, 101))
        assert all(u.after > 100 for u in usages[100:])
        assert all(u.reset_seconds == 60 - int(T0) % 60 for u in usages)
        # 10 blocks of 10 for the allowed hits; the refused ones are counted one by one.
        assert store.calls_sent == 10 + 30
        assert store.granted_locally == 90
        await store.close()

    asyncio.run(main())


def test_concurrent_checks_of_one_replica_never_pass_the_limit(
    redis_server: RedisProcess,
) -> None:
    async def main() -> None:
        store = leased(redis_server)
        usages = [u for batch in await asyncio.gather(
            *(store.apply([op()], T0) for _ in range(160))) for u in batch]
        assert allowed(usages) == 100
        assert sorted(u.after for u in usages if u.after <= 100) == list(range(1, 101))
        # One block on its way per counter: the others wait for it instead of each
        # reserving their own (then 1600 hits would be reserved): 10 blocks granted,
        # one that found the limit reached, then the refused checks one hit each.
        counted = int(cli(redis_server.port, "GET", f"rl_user_ann_{START}").strip())
        assert counted <= 100 + 10 + 60, counted
        await store.close()

    asyncio.run(main())


def test_concurrent_replicas_hoard_no_blocks(redis_server: RedisProcess) -> None:
    async def main() -> None:
        stores = [leased(redis_server) for _ in range(3)]
        batches = await asyncio.gather(
            *(stores[i % 3].apply([op()], T0) for i in range(180)))
        # Each replica has at most one block it could not hand out: 2 of them may be
        # lost to the third, never more (without the wait, every check took a block).
        assert 100 - 2 * 9 <= allowed([u for batch in batches for u in batch]) <= 100
        for store in stores:
            await store.close()

    asyncio.run(main())


def test_a_lease_grants_no_more_than_a_limit_lowered_by_a_reload(
    redis_server: RedisProcess,
) -> None:
    async def main() -> None:
        store = leased(redis_server)
        assert (await one(store, op())).after == 1  # a block of 10 under the old limit
        five = Limit(5, Unit.MINUTE)
        usages = [await one(store, op(limit=five)) for _ in range(10)]
        assert allowed(usages, five) == 4
        await store.close()

    asyncio.run(main())


def test_replicas_together_never_pass_the_limit_and_lose_at_most_a_block_each(
    redis_server: RedisProcess,
) -> None:
    async def main() -> None:
        stores = [leased(redis_server) for _ in range(3)]
        usages: list[Usage] = []
        for i in range(200):  # interleaved, as a load balancer spreads them
            usages.append(await one(stores[i % 3], op()))
        # Never more than the limit; a replica's unused reservation (under a block, 10)
        # is lost to the others only.
        assert 100 - 2 * 10 <= allowed(usages) <= 100
        for store in stores:
            await store.close()

    asyncio.run(main())


def test_a_new_window_takes_a_new_block(redis_server: RedisProcess) -> None:
    async def main() -> None:
        store = leased(redis_server)
        assert allowed([await one(store, op()) for _ in range(101)]) == 100
        fresh = await one(store, op(), T0 + 60)
        assert fresh.after == 1
        assert cli(redis_server.port, "GET", f"rl_user_ann_{START + 60}").strip() == "10"
        await store.close()

    asyncio.run(main())


def test_the_counter_in_redis_holds_the_reserved_block(redis_server: RedisProcess) -> None:
    async def main() -> None:
        store = leased(redis_server)
        await one(store, op())
        assert cli(redis_server.port, "GET", f"rl_user_ann_{START}").strip() == "10"
        assert cli(redis_server.port, "TTL", f"rl_user_ann_{START}").strip() not in ("-1", "-2")
        await store.close()

    asyncio.run(main())


def test_what_does_not_lease_is_counted_exactly(redis_server: RedisProcess) -> None:
    """Other algorithms, grouped counters, small limits and big hits: one trip each."""
    async def main() -> None:
        store = leased(redis_server)
        smooth = Limit(100, Unit.MINUTE, algorithm=Algorithm.SLIDING_WINDOW)
        small = Limit(15, Unit.MINUTE)  # a tenth is 1: not worth a block
        cases = [op("s_", limit=smooth), op("g_", group=0), op("m_", limit=small),
                 op("h_", hits=6)]  # a block of 10 does not hold two requests of 6
        for counter in cases:
            before = store.calls_sent
            assert (await one(store, counter)).after == counter.hits
            assert (await one(store, counter)).after == 2 * counter.hits
            assert store.calls_sent == before + 2, counter
        assert store.granted_locally == 0
        await store.close()

    asyncio.run(main())


def test_reserved_hits_outlive_a_redis_outage_and_then_it_fails_by_counter(
    redis_server: RedisProcess,
) -> None:
    async def main() -> None:
        store = leased(redis_server)
        await one(store, op())  # a block of 10: 9 left
        redis_server.stop()
        assert [(await one(store, op())).after for _ in range(9)] == list(range(2, 11))
        (down,) = await store.apply([op()], T0)
        assert down.error  # the limiter's failure mode decides, as without leases
        await store.close()

    asyncio.run(main())


def test_an_evicted_lease_only_loses_its_hits(redis_server: RedisProcess) -> None:
    async def main() -> None:
        inner = RedisStore(connect_single(redis_server.url, RedisOptions(timeout=0.5)))
        store = LeasedStore(inner, 50, max_leases=1)
        await one(store, op("a_"))
        await one(store, op("b_"))  # evicts a_'s lease with 9 hits unused
        assert len(store) == 1
        usages = [await one(store, op("a_")) for _ in range(100)]
        assert allowed(usages) == 90  # never more: a_'s lost hits stay counted in Redis
        await store.close()

    asyncio.run(main())


def test_the_admin_reset_drops_the_lease(redis_server: RedisProcess) -> None:
    async def main() -> None:
        store = leased(redis_server)
        await one(store, op())
        assert await store.delete([f"rl_user_ann_{START}"]) == 1
        assert len(store) == 0
        assert (await one(store, op())).after == 1
        await store.close()

    asyncio.run(main())


def test_settings_refuse_a_lease_that_cannot_work(redis_server: RedisProcess) -> None:
    with pytest.raises(SettingsError, match="--redis-lease-hits needs a Redis store"):
        check_store(StoreSettings(lease_hits=10), "")
    with pytest.raises(SettingsError, match="STOP_CACHE_KEY_INCREMENT_WHEN_OVERLIMIT"):
        check_store(StoreSettings(url=redis_server.url, lease_hits=10, stop_when_over=True), "")
    with pytest.raises(SettingsError, match="--limits-redis-lease-hits -1"):
        check_store(StoreSettings(url=redis_server.url, lease_hits=-1), "limits-")
    settings = parse_settings(["--redis-url", redis_server.url, "--redis-lease-hits", "64"])
    store, _ = build_store(settings.store)
    assert isinstance(store, LeasedStore)
    assert store.lease_hits == 64
    plain, _ = build_store(parse_settings(["--redis-url", redis_server.url]).store)
    assert isinstance(plain, RedisStore)


def test_with_the_over_limit_cache_a_spent_window_costs_no_more_trips(
    redis_server: RedisProcess,
) -> None:
    async def main() -> None:
        store = leased(redis_server, cache=1 << 20)
        usages = [await one(store, op()) for _ in range(101)]
        assert allowed(usages) == 100
        sent = store.calls_sent
        later = [await one(store, op()) for _ in range(20)]
        assert all(u.after > 100 and u.from_local_cache for u in later)
        assert store.calls_sent == sent
        await store.close()

    asyncio.run(main())


def test_apply_now_grants_from_a_lease_or_leaves_everything_to_apply(
    redis_server: RedisProcess,
) -> None:
    async def main() -> None:
        store = leased(redis_server)
        assert store.apply_now([op()], T0) is None  # no lease yet: nothing to grant
        assert (await one(store, op())).after == 1  # a block of 10
        now = store.apply_now([op(), op("other_")], T0)
        assert now is None  # one of them has no lease: none taken
        assert [u.after for u in store.apply_now([op()], T0) or []] == [2]
        # The same counter twice in one request is left to apply, which takes in turn.
        assert store.apply_now([op(), op()], T0) is None
        assert [u.after for u in await store.apply([op(), op()], T0)] == [3, 4]
        taken: list[Usage] = []
        for _ in range(6):
            taken += store.apply_now([op()], T0) or []
        assert [u.after for u in taken] == [5, 6, 7, 8, 9, 10]
        assert store.apply_now([op()], T0) is None  # the block is used up
        await store.close()

    asyncio.run(main())


RULES = """
domain: {domain}
descriptors:
  - key: user
    rate_limit: {{unit: minute, requests_per_unit: 50}}
  - key: ip
    rate_limit: {{unit: minute, requests_per_unit: 200}}
"""


def test_one_leasing_replica_decides_as_exact_counting_does_until_near_the_limit(
    redis_server: RedisProcess,
) -> None:
    """The same requests (1-4 hits, two limits, past both) through the limiter on exact
    Redis counting and on leases: the same codes while the limit is more than a block
    away, remaining hits within a block, and never more hits allowed than the limit."""
    async def main() -> None:
        clock = Clock(T0)

        def redis() -> RedisStore:
            return RedisStore(connect_single(redis_server.url, RedisOptions(timeout=5)))

        exact = make_limiter(rules_from(RULES.format(domain="ex")), clock=clock, store=redis())
        leasing = make_limiter(rules_from(RULES.format(domain="ls")), clock=clock,
                               store=LeasedStore(redis(), 1000))
        blocks = {50: 5, 200: 20}  # a tenth of each limit
        used = {50: 0, 200: 0}  # hits exact counting has seen (refused ones count)
        allowed_hits = {50: 0, 200: 0}
        for i in range(90):
            hits = 1 + (i * 7) % 4
            replies = []
            for domain, limiter in (("ex", exact), ("ls", leasing)):
                query = to_query(request(domain, descriptor(("user", "u")),
                                         descriptor(("ip", "1.2.3.4")), hits=hits))
                replies.append((await limiter.should_rate_limit(query)).statuses)
            for mine, theirs, limit in zip(replies[1], replies[0], (50, 200), strict=True):
                used[limit] += hits
                if used[limit] <= limit - blocks[limit]:
                    assert mine.code == theirs.code, (i, limit)
                assert abs(mine.limit_remaining - theirs.limit_remaining) <= blocks[limit]
                assert mine.duration_until_reset == theirs.duration_until_reset
            if all(s.code == Code.OK for s in replies[1]):
                for limit in allowed_hits:
                    allowed_hits[limit] += hits
        assert allowed_hits[50] <= 50
        assert leasing.store.granted_locally > 0  # type: ignore[attr-defined]
        await exact.store.close()
        await leasing.store.close()

    asyncio.run(main())
