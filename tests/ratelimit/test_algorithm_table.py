"""Every algorithm on every store through one table (memory, Redis, Redis Cluster).

Each row is (seconds since the first step, hits, expected before, expected after,
expected seconds until reset), worked out by hand from the algorithm's definition
for a limit of 4 per minute (the token bucket: burst 6); every store must give
exactly these answers. The Redis stores also report the local over-limit cache
deadline each algorithm owns.
"""

from __future__ import annotations

import asyncio
import itertools

import pytest

from ratelimit_service.algorithms import REGISTRY
from ratelimit_service.models import CounterOp, Limit, Unit
from ratelimit_service.stores import CounterStore
from ratelimit_service.stores.cluster import connect_cluster
from ratelimit_service.stores.memory import MemoryStore
from ratelimit_service.stores.redis import RedisOptions, RedisStore, connect_single
from tests.kits.ratelimit_kit import T0
from tests.kits.redis_procs import RedisCluster, RedisProcess

pytestmark = pytest.mark.integration

START = T0  # 10 s into a minute
Row = tuple[float, int, int, int, int]

TABLE: dict[str, tuple[Limit, list[Row]]] = {
    # Rejected hits still count; a new window starts from zero.
    "fixed_window": (Limit(4, Unit.MINUTE), [
        (0, 1, 0, 1, 50), (0, 2, 1, 3, 50), (0, 1, 3, 4, 50), (0, 1, 4, 5, 50),
        (49.9, 1, 5, 6, 1), (50, 1, 0, 1, 60), (50, 0, 1, 1, 60),
    ]),
    # 15 s into the next window, 3/4 of the previous window's 5 still count (3).
    "sliding_window": (Limit(4, Unit.MINUTE, algorithm="sliding_window"), [
        (0, 1, 0, 1, 50), (0, 2, 1, 3, 50), (0, 1, 3, 4, 50), (0, 1, 4, 5, 50),
        (65, 1, 3, 4, 45), (65, 1, 4, 5, 45), (125, 0, 1, 1, 45),
    ]),
    # One hit drains every 15 s; a rejected hit is not added.
    "gcra": (Limit(4, Unit.MINUTE, algorithm="gcra"), [
        (0, 1, 0, 1, 15), (0, 2, 1, 3, 45), (0, 1, 3, 4, 60), (0, 1, 4, 5, 60),
        (15, 1, 3, 4, 60), (15, 1, 4, 5, 60), (75, 0, 0, 0, 0),
    ]),
    # A full bucket of 6, one token back every 15 s; a rejected hit takes nothing.
    "token_bucket": (Limit(4, Unit.MINUTE, algorithm="token_bucket", burst=6), [
        (0, 1, 0, 1, 15), (0, 2, 1, 3, 45), (0, 3, 3, 6, 90), (0, 1, 6, 7, 90),
        (15, 1, 5, 6, 90), (15, 1, 6, 7, 90), (45, 0, 4, 4, 60),
    ]),
}

# Until when each algorithm says a key over its limit stays over (seconds after the
# step that went over), or None when it must not be cached.
CACHE_DEADLINE = {"fixed_window": 50, "sliding_window": None, "gcra": 15, "token_bucket": 15}

_runs = itertools.count()


def test_the_table_covers_every_registered_algorithm() -> None:
    assert sorted(TABLE) == sorted(REGISTRY) == sorted(CACHE_DEADLINE)


def make_store(kind: str, request: pytest.FixtureRequest, cache: int = 0) -> CounterStore:
    if kind == "memory":
        return MemoryStore()
    options = RedisOptions(timeout=5)
    if kind == "redis":
        server: RedisProcess = request.getfixturevalue("redis_server")
        return RedisStore(connect_single(server.url, options), local_cache_bytes=cache)
    cluster: RedisCluster = request.getfixturevalue("redis_cluster")
    nodes = [("127.0.0.1", n.port) for n in cluster.nodes]
    return RedisStore(connect_cluster(nodes, options), local_cache_bytes=cache)


@pytest.mark.parametrize("store_kind", ["memory", "redis", "cluster"])
@pytest.mark.parametrize("algorithm", sorted(TABLE))
def test_every_algorithm_on_every_store(
    algorithm: str, store_kind: str, request: pytest.FixtureRequest
) -> None:
    limit, rows = TABLE[algorithm]
    store = make_store(store_kind, request)
    base = f"table_{algorithm}_{next(_runs)}_"

    async def main() -> None:
        got = []
        for offset, hits, *_ in rows:
            (usage,) = await store.apply([CounterOp(base, hits, limit)], START + offset)
            got.append((offset, hits, usage.before, usage.after, usage.reset_seconds))
        assert got == rows
        await store.close()

    asyncio.run(main())


@pytest.mark.parametrize("store_kind", ["redis", "cluster"])
@pytest.mark.parametrize("algorithm", sorted(TABLE))
def test_each_algorithm_owns_its_local_cache_deadline(
    algorithm: str, store_kind: str, request: pytest.FixtureRequest
) -> None:
    limit, _ = TABLE[algorithm]
    store = make_store(store_kind, request, cache=1 << 20)
    assert isinstance(store, RedisStore)
    base = f"cache_{algorithm}_{next(_runs)}_"

    async def main() -> None:
        key = REGISTRY[algorithm].script_op(base, limit, START).keys[0]
        if algorithm in ("gcra", "token_bucket"):
            # Too many hits at once is over, but one hit still fits: nothing cached.
            bulk = f"{base}bulk_"
            (usage,) = await store.apply([CounterOp(bulk, limit.capacity + 1, limit)], START)
            assert usage.after > limit.capacity
            bulk_key = REGISTRY[algorithm].script_op(bulk, limit, START).keys[0]
            assert store.local_cache.over_until(bulk_key, START) is None
        # Fill the limit, then one more hit: over, and known over until the deadline.
        await store.apply([CounterOp(base, limit.capacity, limit)], START)
        (usage,) = await store.apply([CounterOp(base, 1, limit)], START)
        assert usage.after > limit.capacity and not usage.from_local_cache
        until = store.local_cache.over_until(key, START)
        expected = CACHE_DEADLINE[algorithm]
        if expected is None:
            assert until is None
        else:
            assert until == pytest.approx(START + expected)
            (again,) = await store.apply([CounterOp(base, 1, limit)], START + 1)
            assert again.from_local_cache
        await store.close()

    asyncio.run(main())
