"""STOP_CACHE_KEY_INCREMENT_WHEN_OVERLIMIT, on every store, through real gRPC."""

from __future__ import annotations

import asyncio

import pytest

from ratelimit_service.charging import charges
from ratelimit_service.stores import CounterStore
from ratelimit_service.stores.cluster import connect_cluster
from ratelimit_service.stores.memory import MemoryStore
from ratelimit_service.stores.redis import RedisOptions, RedisStore, connect_single
from tests.kits.ratelimit_kit import OK, OVER, descriptor, make_limiter, rules_from, serve
from tests.kits.ratelimit_kit import request as request_for
from tests.kits.redis_procs import RedisCluster, RedisProcess

pytestmark = pytest.mark.integration  # real processes: redis-server, Envoy, the service

CONFIG = """
domain: stop
descriptors:
  - key: tight
    rate_limit: {unit: minute, requests_per_unit: 2}
  - key: loose
    rate_limit: {unit: minute, requests_per_unit: 10}
"""


def test_the_charging_rule_follows_the_reference() -> None:
    one = [0, 0]  # both counters in one group, as under the reference's flag
    # Nothing over: all charged. One would go over: only it. One known over: none.
    assert charges([1, 1], one, [False, False]) == [1, 1]
    assert charges([1, 1], one, [True, False]) == [1, 0]
    assert charges([1, 1], one, [False, False], [True, False]) == [0, 0]
    assert charges([3, 3], one, [True, True]) == [3, 3]
    # Counters of their own, or alone in their group, are always charged.
    assert charges([1, 1], [-1, -1], [True, False]) == [1, 1]
    assert charges([1, 1, 1], [1, 2, 1], [False, True, False]) == [1, 1, 1]


def make_store(kind: str, stop: bool, request: pytest.FixtureRequest) -> CounterStore:
    """The store under test; Redis and the cluster come from the suite's fixtures."""
    if kind == "memory":
        return MemoryStore(stop_when_over=stop)
    if kind == "redis":
        server: RedisProcess = request.getfixturevalue("redis_server")
        return RedisStore(connect_single(server.url, RedisOptions(timeout=5)),
                          stop_when_over=stop)
    cluster: RedisCluster = request.getfixturevalue("redis_cluster")
    nodes = [("127.0.0.1", n.port) for n in cluster.nodes]
    return RedisStore(connect_cluster(nodes, RedisOptions(timeout=5)), stop_when_over=stop)


@pytest.mark.parametrize("kind", ["memory", "redis", "cluster"])
@pytest.mark.parametrize("stop", [False, True])
def test_a_rejected_request_does_not_use_up_its_other_limits(
    kind: str, stop: bool, request: pytest.FixtureRequest
) -> None:
    store = make_store(kind, stop, request)

    async def main() -> None:
        limiter = make_limiter(rules_from(CONFIG), store=store)
        async with serve(limiter) as served:
            tag = f"{kind}-{stop}"
            both = request_for("stop", descriptor(("tight", tag)), descriptor(("loose", tag)))
            assert await served.codes(both, 5) == [OK, OK, OVER, OVER, OVER]
            alone = await served.call(request_for("stop", descriptor(("loose", tag))))
            # Without the setting the 3 rejected requests used up `loose` too.
            assert alone.statuses[0].limit_remaining == (10 - 3 if stop else 10 - 6)
        await store.close()

    asyncio.run(main())
