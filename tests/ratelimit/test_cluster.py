"""The cluster store against a real 3-master Redis Cluster started from redis-server."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
from redis.asyncio.cluster import ClusterNode
from redis.asyncio.cluster import RedisCluster as ClusterClient
from redis.crc import key_slot

from ratelimit_service.cli import parse_settings
from ratelimit_service.limiter import FailureMode
from ratelimit_service.models import Algorithm, CounterOp, Limit, Unit
from ratelimit_service.stores.cluster import ClusterLink, connect_cluster
from ratelimit_service.stores.factory import build_store
from ratelimit_service.stores.redis import RedisOptions, RedisStore
from ratelimit_service.stores.resp import Endpoint, RespConnection
from tests.kits.ratelimit_kit import (
    OK,
    OVER,
    T0,
    Clock,
    descriptor,
    make_limiter,
    request,
    rules_from,
    serve,
)
from tests.kits.redis_procs import RedisCluster, cli, wait_until

pytestmark = pytest.mark.integration  # real processes: redis-server, Envoy, the service

CONFIG = """
domain: cl
descriptors:
  - key: user
    rate_limit: {unit: minute, requests_per_unit: 3}
  - key: ip
    rate_limit: {unit: second, requests_per_unit: 100}
  - key: api_key
    rate_limit: {unit: day, requests_per_unit: 1000}
  - key: shared
    rate_limit: {unit: minute, requests_per_unit: 30}
  - key: gcra
    rate_limit: {unit: minute, requests_per_unit: 2, algorithm: gcra}
  - key: smooth
    rate_limit: {unit: minute, requests_per_unit: 2, algorithm: sliding_window}
"""


class ClusterStore(RedisStore):
    link: ClusterLink


def cluster_store(cluster: RedisCluster) -> ClusterStore:
    nodes = [("127.0.0.1", n.port) for n in cluster.nodes]
    return ClusterStore(connect_cluster(nodes, RedisOptions(timeout=5.0)))


def scripts(calls: dict[str, int]) -> int:
    return calls.get("evalsha", 0) + calls.get("eval", 0)


def users_on_every_master() -> list[str]:
    """12 user names whose counter keys fall in each third of the slots (4 per master)."""
    window = int(T0) // 60 * 60
    thirds: dict[int, list[str]] = {0: [], 1: [], 2: []}
    for i in range(1000):
        name = f"user{i}"
        third = key_slot(f"cl_user_{name}_{window}".encode()) * 3 // 16384
        if len(thirds[third]) < 4:
            thirds[third].append(name)
    return [name for names in thirds.values() for name in names]


def test_one_request_spanning_slots_on_every_master(redis_cluster: RedisCluster) -> None:
    async def main() -> None:
        store = cluster_store(redis_cluster)
        limiter = make_limiter(rules_from(CONFIG), store=store)
        before = [scripts(n.command_calls()) for n in redis_cluster.nodes]
        async with serve(limiter) as served:
            descs = [descriptor(("user", u)) for u in users_on_every_master()]
            descs += [descriptor(("ip", "10.0.0.1")), descriptor(("api_key", "k1"))]
            req = request("cl", *descs)
            responses = [await served.call(req) for _ in range(4)]
        assert [r.overall_code for r in responses] == [OK, OK, OK, OVER]
        last = responses[-1]
        assert [s.code for s in last.statuses[:12]] == [OVER] * 12
        assert [s.limit_remaining for s in last.statuses[12:]] == [96, 996]
        after = [scripts(n.command_calls()) for n in redis_cluster.nodes]
        per_node = [a - b for a, b in zip(after, before, strict=True)]
        # One script per slot per request (these 14 keys are in 14 slots), on every
        # master; on first use each slot group finds no script: one more EVAL.
        assert 14 * 4 <= sum(per_node) <= 14 * 4 + 14
        assert all(count > 0 for count in per_node), per_node
        # Keys are the reference's, readable through any cluster client.
        window = int(T0) // 60 * 60
        seed = redis_cluster.nodes[0]
        direct = ClusterClient(startup_nodes=[ClusterNode("127.0.0.1", seed.port)])
        assert int(await direct.get(f"cl_user_{users_on_every_master()[0]}_{window}")) == 4
        await direct.aclose()
        await store.close()

    asyncio.run(main())


def test_smoother_algorithms_on_the_cluster(redis_cluster: RedisCluster) -> None:
    async def main() -> None:
        store = cluster_store(redis_cluster)
        clock = Clock()
        limiter = make_limiter(rules_from(CONFIG), store=store, clock=clock)
        async with serve(limiter) as served:
            both = request("cl", descriptor(("gcra", "g")), descriptor(("smooth", "s")))
            codes = [[s.code for s in (await served.call(both)).statuses] for _ in range(3)]
            assert codes == [[OK, OK], [OK, OK], [OVER, OVER]]
            clock.advance(30)  # GCRA frees one slot per 30 s; sliding still sees 3
            codes = [s.code for s in (await served.call(both)).statuses]
            assert codes == [OK, OVER]
        await store.close()

    asyncio.run(main())


def test_two_replicas_on_the_cluster_never_admit_more(redis_cluster: RedisCluster) -> None:
    async def main() -> None:
        clock = Clock()
        stores = [cluster_store(redis_cluster) for _ in range(2)]
        # Fail closed: a store hiccup must surface as an error, never as an admission.
        replicas = [make_limiter(rules_from(CONFIG), store=s, clock=clock,
                                 failure_mode=FailureMode.CLOSED) for s in stores]
        async with serve(replicas[0]) as a, serve(replicas[1]) as b:
            req = request("cl", descriptor(("shared", "t")))
            responses = await asyncio.gather(*((a if i % 2 else b).call(req) for i in range(200)))
            assert sum(1 for r in responses if r.overall_code == OK) == 30
        for store in stores:
            await store.close()

    asyncio.run(main())


def test_cluster_url_selects_the_cluster_store(redis_cluster: RedisCluster) -> None:
    async def main() -> None:
        store, target = build_store(parse_settings(["--redis-url", redis_cluster.url]).store)
        assert target.kind == "cluster"
        assert isinstance(store, RedisStore) and isinstance(store.link, ClusterLink)
        op = CounterOp("cl_url_x_", 1, Limit(5, Unit.HOUR, algorithm=Algorithm.FIXED_WINDOW))
        assert (await store.apply([op], T0))[0].after == 1
        await store.close()

    asyncio.run(main())


def test_a_stale_slot_map_follows_moved(redis_cluster: RedisCluster) -> None:
    async def main() -> None:
        store = cluster_store(redis_cluster)
        op = CounterOp("cl_moved_x_", 1, Limit(5, Unit.HOUR))
        assert (await store.apply([op], T0))[0].after == 1
        router = store.link
        # Point every slot at one master, as if the map predated a resharding.
        first = router.slots[0]
        router.slots = [first] * len(router.slots)
        refreshes = router.refreshes
        usages = [(await store.apply([op], T0))[0].after for _ in range(3)]
        assert usages == [2, 3, 4]
        assert router.refreshes >= refreshes + 1
        await store.close()

    asyncio.run(main())


def test_a_migrating_slot_follows_ask(redis_cluster: RedisCluster) -> None:
    """Mid-resharding, a key already moved is counted on the target via ASKING."""
    key_base = "cl_ask_x_"
    op = CounterOp(key_base, 1, Limit(5, Unit.HOUR))
    key = f"{key_base}{int(T0) // 3600 * 3600}"
    slot = key_slot(key.encode())
    ports = {n.port: n for n in redis_cluster.nodes}

    async def main() -> None:
        store = cluster_store(redis_cluster)
        await store.link.refresh()
        source = store.link.slots[slot]
        assert source is not None
        target = next(p for p in ports if p != source[1])
        source_id = cli(source[1], "CLUSTER", "MYID").strip()
        target_id = cli(target, "CLUSTER", "MYID").strip()
        importing = cli(target, "CLUSTER", "SETSLOT", str(slot), "IMPORTING", source_id)
        migrating = cli(source[1], "CLUSTER", "SETSLOT", str(slot), "MIGRATING", target_id)
        assert (importing.strip(), migrating.strip()) == ("OK", "OK")
        try:
            # The key is not on the source: it answers ASK, the target counts.
            usages = [(await store.apply([op], T0))[0].after for _ in range(3)]
            assert usages == [1, 2, 3]
            direct = RespConnection(Endpoint("127.0.0.1", target))
            _, count = await direct.call_many([("ASKING",), ("GET", key)])
            assert count == b"3"
            await direct.call_many([("ASKING",), ("DEL", key)])
            await direct.aclose()
        finally:
            for port in (source[1], target):
                cli(port, "CLUSTER", "SETSLOT", str(slot), "STABLE")
        await store.close()

    asyncio.run(main())


def test_a_master_killed_and_restarted_fails_its_slots_then_recovers(
    redis_cluster: RedisCluster,
) -> None:
    """Requests touching the dead master's slots fail (closed here), the service keeps
    answering, the node rejoins from its nodes.conf and counting resumes. Runs last in
    this file: it waits for the cluster to be healthy again before returning."""
    victim = redis_cluster.nodes[2]
    users = users_on_every_master()
    alive_user, dead_user = users[0], users[-1]  # first third vs last third of slots

    async def main() -> None:
        store = cluster_store(redis_cluster)
        limiter = make_limiter(rules_from(CONFIG), store=store,
                               failure_mode=FailureMode.CLOSED)
        async with serve(limiter) as served:
            alive = request("cl", descriptor(("user", alive_user + "-r")))
            dead = request("cl", descriptor(("user", dead_user)))
            dead_slot = key_slot(f"cl_user_{dead_user}_{int(T0) // 60 * 60}".encode())
            assert dead_slot >= 10923  # owned by the third master
            await served.call(dead)
            victim.stop()
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await served.call(dead)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
            # (The other masters answer until node-timeout, then the whole cluster
            # reports CLUSTERDOWN with the default cluster-require-full-coverage.)
            victim.start()
            for node in redis_cluster.nodes:
                wait_until(
                    lambda n=node: "cluster_state:ok" in cli(n.port, "CLUSTER", "INFO"),  # type: ignore[misc]
                    30, f"cluster_state:ok on {node.port}",
                )
            deadline = time.monotonic() + 15
            while True:
                try:
                    response = await served.call(dead)
                    break
                except grpc.aio.AioRpcError:
                    if time.monotonic() > deadline:
                        pytest.fail("requests on the restarted master did not recover")
                    await asyncio.sleep(0.05)
            # The restarted master came back empty (no persistence): counting restarts.
            assert response.statuses[0].limit_remaining == 2
            assert (await served.call(alive)).overall_code == OK
        await store.close()

    asyncio.run(main())
