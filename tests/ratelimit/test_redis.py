"""The Redis store against a real redis-server on a free port (started by the test)."""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
import redis.asyncio as aioredis

from ratelimit_service.adapter import to_query
from ratelimit_service.cli import parse_settings
from ratelimit_service.decision import Code
from ratelimit_service.limiter import FailureMode
from ratelimit_service.models import Algorithm, CounterOp, Limit, Unit
from ratelimit_service.stores.factory import build_store
from ratelimit_service.stores.redis import RedisOptions, RedisStore, connect_single
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
from tests.kits.redis_procs import RedisProcess, binary, cli, free_port, wait_until

pytestmark = pytest.mark.integration  # real processes: redis-server, Envoy, the service

CONFIG = """
domain: rl
descriptors:
  - key: user
    rate_limit: {unit: minute, requests_per_unit: 3}
  - key: ip
    rate_limit: {unit: second, requests_per_unit: 100}
  - key: shared
    rate_limit: {unit: minute, requests_per_unit: 25}
  - key: smooth
    rate_limit: {unit: minute, requests_per_unit: 4, algorithm: sliding_window}
  - key: gcra
    rate_limit: {unit: minute, requests_per_unit: 4, algorithm: gcra}
  - key: api_key
    quota_mode: true
    rate_limit: {unit: month, requests_per_unit: 1000}
"""


class CountingClient:
    """Wraps a client to count pipeline round trips."""

    def __init__(self, client: aioredis.Redis) -> None:
        self.client = client
        self.round_trips = 0

    def pipeline(self, transaction: bool = False) -> Any:
        pipe = self.client.pipeline(transaction=transaction)
        execute = pipe.execute

        async def counted(raise_on_error: bool = True) -> Any:
            self.round_trips += 1
            return await execute(raise_on_error=raise_on_error)

        pipe.execute = counted
        return pipe

    async def aclose(self) -> None:
        await self.client.aclose()


def store_for(server: RedisProcess, *, cache: int = 0) -> RedisStore:
    return RedisStore(connect_single(server.url, RedisOptions(timeout=0.5)),
                      local_cache_bytes=cache)


def test_fixed_window_keys_counts_and_expiry_as_the_reference(
    redis_server: RedisProcess,
) -> None:
    async def main() -> None:
        store = store_for(redis_server)
        limiter = make_limiter(rules_from(CONFIG), store=store)
        async with serve(limiter) as served:
            req = request("rl", descriptor(("user", "ann")), descriptor(("ip", "1.2.3.4")))
            codes = await served.codes(req, 4)
            assert codes == [OK, OK, OK, OVER]
        window = int(T0) // 60 * 60
        direct = aioredis.Redis.from_url(redis_server.url)
        assert int(await direct.get(f"rl_user_ann_{window}")) == 4
        assert int(await direct.get(f"rl_ip_1.2.3.4_{int(T0)}")) == 4
        assert 0 < await direct.ttl(f"rl_user_ann_{window}") <= 60
        await direct.aclose()
        await store.close()

    asyncio.run(main())


def test_one_round_trip_and_one_command_per_request(redis_server: RedisProcess) -> None:
    async def main() -> None:
        link = connect_single(redis_server.url, RedisOptions())
        connection = link.connection
        store = RedisStore(link)
        limiter = make_limiter(rules_from(CONFIG), store=store)
        async with serve(limiter) as served:
            req = request("rl", descriptor(("user", "rt")), descriptor(("ip", "9.9.9.9")),
                          descriptor(("smooth", "s")), descriptor(("gcra", "g")),
                          descriptor(("unknown", "x")))
            # The very first request finds no script cached: EVALSHA, then EVAL.
            await served.call(req)
            assert connection.calls == 2
            before = redis_server.command_calls()
            await served.codes(req, 3)
        after = redis_server.command_calls()
        assert connection.calls == 2 + 3
        # commandstats also counts the commands a script runs; the client sent EVALSHAs.
        assert after["evalsha"] - before["evalsha"] == 3
        assert after.get("eval", 0) == before.get("eval", 0) == 1
        await store.close()

    asyncio.run(main())


def test_concurrent_requests_share_script_calls_and_stay_exact(
    redis_server: RedisProcess,
) -> None:
    """Requests in flight together leave in shared script calls: here 200 decisions
    started in one loop turn cost one EVALSHA, and the counts stay exact."""

    async def main() -> None:
        link = connect_single(redis_server.url, RedisOptions(timeout=5))
        store = RedisStore(link)
        limiter = make_limiter(rules_from(CONFIG), store=store, failure_mode=FailureMode.CLOSED)
        query = to_query(request("rl", descriptor(("shared", "burst")),
                                 descriptor(("ip", "9.9.9.9")), descriptor(("unknown", "x"))))
        await limiter.should_rate_limit(query)  # loads the script
        before = redis_server.command_calls()
        decisions = await asyncio.gather(*(limiter.should_rate_limit(query) for _ in range(200)))
        after = redis_server.command_calls()
        assert sum(1 for d in decisions if d.overall_code is Code.OK) == 25 - 1
        assert after["evalsha"] - before["evalsha"] == 1
        assert link.connection.calls == 2 + 1  # EVALSHA + EVAL of the first request
        await store.close()

    asyncio.run(main())


def test_local_cache_spares_redis_for_keys_over_the_limit(redis_server: RedisProcess) -> None:
    async def main() -> None:
        link = connect_single(redis_server.url, RedisOptions())
        client = link.connection
        store = RedisStore(link, local_cache_bytes=1 << 20)
        clock = Clock()
        limiter = make_limiter(rules_from(CONFIG), store=store, clock=clock)
        async with serve(limiter) as served:
            req = request("rl", descriptor(("user", "abuser")))
            assert await served.codes(req, 4) == [OK, OK, OK, OVER]
            trips = client.calls
            assert await served.codes(req, 20) == [OVER] * 20
            assert client.calls == trips
            status = (await served.call(req)).statuses[0]
            assert (status.limit_remaining, status.duration_until_reset.seconds) == (0, 50)
            assert limiter.stats.get("rl.user", "over_limit_with_local_cache") == 21
            clock.advance(50)  # the next window: Redis again
            assert await served.codes(req, 1) == [OK]
            assert client.calls == trips + 1
        await store.close()

    asyncio.run(main())


def test_gcra_script_is_reloaded_after_a_flush(redis_server: RedisProcess) -> None:
    async def main() -> None:
        store = store_for(redis_server)
        op = CounterOp("rl_f_", 1, Limit(10, Unit.MINUTE, algorithm=Algorithm.GCRA))
        assert (await store.apply([op], T0))[0].after == 1
        direct = aioredis.Redis.from_url(redis_server.url)
        await direct.script_flush()
        assert (await store.apply([op], T0))[0].after == 2
        await direct.aclose()
        calls = redis_server.command_calls()
        assert calls["eval"] == 2 and calls["evalsha"] == 2
        await store.close()

    asyncio.run(main())


@pytest.mark.parametrize("mode", [FailureMode.CLOSED, FailureMode.OPEN])
def test_redis_killed_and_restarted_mid_test(
    redis_server: RedisProcess, mode: FailureMode
) -> None:
    async def main() -> None:
        store = store_for(redis_server)
        limiter = make_limiter(rules_from(CONFIG), store=store, failure_mode=mode)
        async with serve(limiter) as served:
            req = request("rl", descriptor(("user", "k")))
            assert await served.codes(req, 2) == [OK, OK]
            redis_server.stop()
            for _ in range(3):
                if mode is FailureMode.CLOSED:
                    with pytest.raises(grpc.aio.AioRpcError) as err:
                        await served.call(req)
                    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
                else:
                    assert (await served.call(req)).overall_code == OK
            assert limiter.stats.get("service", "store_error") == 3
            redis_server.start()  # same port, empty data
            deadline = time.monotonic() + 10
            while True:
                # Counted again (a status with a limit) means Redis answered.
                try:
                    response = await served.call(req)
                except grpc.aio.AioRpcError:
                    response = None
                if response is not None and response.statuses[0].HasField("current_limit"):
                    break
                if time.monotonic() > deadline:
                    pytest.fail("service did not recover within 10 s of the Redis restart")
                await asyncio.sleep(0.05)
            # Counting works again on the fresh Redis.
            status = (await served.call(req)).statuses[0]
            assert status.current_limit.requests_per_unit == 3
            assert status.limit_remaining in (0, 1)
        await store.close()

    asyncio.run(main())


def test_two_replicas_many_clients_never_admit_more_than_the_limit(
    redis_server: RedisProcess,
) -> None:
    async def main() -> None:
        clock = Clock()
        stores = [
            RedisStore(connect_single(redis_server.url, RedisOptions(timeout=5.0)))
            for _ in range(2)
        ]
        # Fail closed: a store hiccup on a loaded machine must show up as an error,
        # never as an admission.
        replicas = [
            make_limiter(rules_from(CONFIG), store=s, clock=clock,
                         failure_mode=FailureMode.CLOSED)
            for s in stores
        ]
        async with serve(replicas[0]) as a, serve(replicas[1]) as b:
            req = request("rl", descriptor(("shared", "tenant")))

            async def wave(n: int) -> int:
                calls = [(a if i % 2 else b).call(req) for i in range(n)]
                responses = await asyncio.gather(*calls)
                return sum(1 for r in responses if r.overall_code == OK)

            assert await wave(300) == 25
            clock.advance(50)  # next window: a fresh 25
            assert await wave(60) == 25
        for store in stores:
            await store.close()

    asyncio.run(main())


def test_redis_killed_under_concurrent_load_fails_every_call_promptly(
    redis_server: RedisProcess,
) -> None:
    async def main() -> None:
        store = store_for(redis_server)
        limiter = make_limiter(rules_from(CONFIG), store=store, failure_mode=FailureMode.CLOSED)
        async with serve(limiter) as served:
            req = request("rl", descriptor(("ip", "1.1.1.1")))

            async def one() -> str:
                try:
                    return "ok" if (await served.call(req)).overall_code == OK else "over"
                except grpc.aio.AioRpcError as err:
                    assert err.code() == grpc.StatusCode.UNAVAILABLE
                    return "unavailable"

            calls = [asyncio.ensure_future(one()) for _ in range(200)]
            await asyncio.sleep(0)
            redis_server.stop()
            started = time.monotonic()
            outcomes = await asyncio.wait_for(asyncio.gather(*calls), timeout=10)
            assert time.monotonic() - started < 5
            assert "unavailable" in outcomes
            assert set(outcomes) <= {"ok", "over", "unavailable"}
            redis_server.start()
            deadline = time.monotonic() + 10
            while (await one()) != "ok":
                if time.monotonic() > deadline:
                    pytest.fail("no recovery within 10 s")
                await asyncio.sleep(0.05)
        await store.close()

    asyncio.run(main())


def test_sentinel_url_follows_the_master(redis_server: RedisProcess, tmp_path: Path) -> None:
    port = free_port()
    conf = tmp_path / "sentinel.conf"
    conf.write_text(
        f"port {port}\nbind 127.0.0.1\ndir {tmp_path}\n"
        f"sentinel monitor mymaster 127.0.0.1 {redis_server.port} 1\n"
    )
    sentinel = subprocess.Popen(
        [binary("redis-server"), str(conf), "--sentinel"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(
            lambda: str(redis_server.port)
            in cli(port, "SENTINEL", "get-master-addr-by-name", "mymaster"),
            20, "sentinel to know the master",
        )

        async def main() -> None:
            url = f"redis+sentinel://127.0.0.1:{port}/mymaster"
            store, target = build_store(parse_settings(["--redis-url", url]).store)
            assert target.kind == "sentinel"
            limiter = make_limiter(rules_from(CONFIG), store=store)
            async with serve(limiter) as served:
                req = request("rl", descriptor(("user", "via-sentinel")))
                assert await served.codes(req, 4) == [OK, OK, OK, OVER]
            await store.close()

        asyncio.run(main())
        window = int(T0) // 60 * 60
        assert cli(redis_server.port, "GET", f"rl_user_via-sentinel_{window}").strip() == "4"
    finally:
        sentinel.kill()
        sentinel.wait(timeout=10)


def test_monthly_quota_is_shared_and_visible_across_replicas(redis_server: RedisProcess) -> None:
    async def main() -> None:
        clock = Clock()
        stores = [store_for(redis_server) for _ in range(2)]
        replicas = [make_limiter(rules_from(CONFIG), store=s, clock=clock) for s in stores]
        async with serve(replicas[0]) as a, serve(replicas[1]) as b:
            req = request("rl", descriptor(("api_key", "k-123"), hits=300))
            first = await a.call(req)
            second = await b.call(req)
            assert [r.statuses[0].limit_remaining for r in (first, second)] == [700, 400]
            month = 30 * 86400
            assert second.statuses[0].duration_until_reset.seconds == month - int(T0) % month
            clock.advance(3600)
            third = await a.call(req)
            assert third.statuses[0].limit_remaining == 100
            over = await b.call(req)
            assert over.overall_code == OVER  # the only quota of the request is exhausted
            assert over.statuses[0].limit_remaining == 0
        for store in stores:
            await store.close()

    asyncio.run(main())


def test_a_pipeline_window_lets_close_requests_share_a_call_and_a_lone_one_go_at_once(
    redis_server: RedisProcess,
) -> None:
    async def main() -> None:
        for window, expected_calls in ((0.0, 3), (0.2, 2)):
            store = RedisStore(connect_single(redis_server.url, RedisOptions(timeout=5)),
                               pipeline_window=window)
            op = CounterOp(f"rl_window_{window}_", 1, Limit(100, Unit.HOUR))
            started = time.monotonic()
            await store.apply([op], T0)  # alone: sent at once, window or not
            assert time.monotonic() - started < 0.1
            first = asyncio.ensure_future(store.apply([op], T0))
            await asyncio.sleep(0.01)  # another loop turn, well inside the window
            second = asyncio.ensure_future(store.apply([op], T0))
            usages = [(await first)[0].after, (await second)[0].after]
            assert sorted(usages) == [2, 3]
            assert store.calls_sent == expected_calls
            await store.close()

    asyncio.run(main())


def test_a_full_call_leaves_at_once(redis_server: RedisProcess) -> None:
    async def main() -> None:
        store = RedisStore(connect_single(redis_server.url, RedisOptions(timeout=5)),
                           pipeline_limit=4)
        ops = [CounterOp(f"rl_full_{i}_", 1, Limit(100, Unit.HOUR)) for i in range(10)]
        results = await asyncio.gather(*(store.apply([op], T0) for op in ops))
        assert [r[0].after for r in results] == [1] * 10
        assert store.calls_sent == 3  # 4 + 4 + 2 counters
        await store.close()

    asyncio.run(main())
