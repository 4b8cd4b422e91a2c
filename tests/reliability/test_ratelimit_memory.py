"""The memory store is bounded by a byte budget, not only a number of keys.

Issue 15 item 10: 100k descriptor values of 2 KB grew the service by 209 MB, because
only the number of keys was bounded. `--memory-max-bytes` (default 64 MiB) bounds
the store's estimated bytes; the estimate is checked against tracemalloc here, and
the real service's RSS against the budget under a stream of distinct 2 KB values.
"""

from __future__ import annotations

import asyncio
import gc
import os
import subprocess
import sys
import tracemalloc
from pathlib import Path

import grpc
import pytest
from envoy.service.ratelimit.v3 import rls_pb2_grpc

from ratelimit_service.models import CounterOp, Limit, Unit
from ratelimit_service.stores.memory import MemoryStore
from tests.kits.processes import accepts, free_port, stop_process, wait_for
from tests.kits.ratelimit_kit import T0, descriptor, request

MiB = 1024 * 1024
VALUE = "v" * 2000


@pytest.mark.parametrize("algorithm", ["fixed_window", "sliding_window", "gcra", "token_bucket"])
def test_many_distinct_big_keys_stay_within_the_byte_budget(algorithm: str) -> None:
    budget = 4 * MiB
    limit = Limit(1_000_000, Unit.HOUR, algorithm=algorithm)
    ops = [CounterOp(f"dom_user_{i:07d}{VALUE}_", 1, limit) for i in range(20_000)]
    gc.collect()
    store = MemoryStore(max_bytes=budget)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for op in ops:
            store.apply_now([op], T0)
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert store.bytes <= budget
    assert held <= 1.15 * budget, f"{held / MiB:.1f} MiB held for a {budget / MiB:.0f} MiB budget"
    assert store.evicted > 15_000  # 40 MB of keys went through a 4 MiB store
    assert len(store) > budget // 3000  # and it kept as many as fit
    # The newest counters are the ones kept, and still count exactly.
    assert store.apply_now([ops[-1]], T0)[0].after == 2


def test_the_estimate_follows_what_python_really_holds() -> None:
    """Small keys, no eviction: the store's estimate within 25% of tracemalloc's."""
    for algorithm in ("fixed_window", "gcra"):
        limit = Limit(1_000_000, Unit.HOUR, algorithm=algorithm)
        ops = [CounterOp(f"dom_user_{i:07d}_", 1, limit) for i in range(50_000)]
        gc.collect()
        store = MemoryStore(max_bytes=1 << 40)
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for op in ops:
                store.apply_now([op], T0)
            held = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        assert 0.75 <= held / store.bytes <= 1.1, (algorithm, held, store.bytes)


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@pytest.mark.integration
def test_the_service_rss_follows_the_budget_under_distinct_2kb_values(tmp_path: Path) -> None:
    config = tmp_path / "rl.yaml"
    config.write_text("domain: mem\ndescriptors:\n  - key: user\n"
                      "    rate_limit: {unit: hour, requests_per_unit: 1000000}\n")
    port = free_port()
    budget = 8 * MiB
    proc = subprocess.Popen(
        [sys.executable, "-m", "ratelimit_service.cli", "--config", str(config),
         "--grpc-address", f"127.0.0.1:{port}", "--memory-max-bytes", str(budget),
         "--log-level", "error"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ},
    )
    try:
        async def send(first: int, count: int) -> None:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                await channel.channel_ready()
                stub = rls_pb2_grpc.RateLimitServiceStub(channel)
                queue = iter(range(first, first + count))

                async def worker() -> None:
                    for i in queue:
                        req = request("mem", descriptor(("user", f"{i:07d}{VALUE}")))
                        await stub.ShouldRateLimit(req, timeout=10)

                await asyncio.gather(*(worker() for _ in range(16)))

        wait_for(lambda: accepts(port), 20, "ratelimit-service to listen")
        asyncio.run(send(0, 3000))  # gRPC's buffers and the allocator warm up
        base = rss_bytes(proc.pid)
        asyncio.run(send(3000, 25_000))  # 50 MB of distinct values
        grown = rss_bytes(proc.pid) - base
        # Without the byte budget this grows by ~55 MB; with it, by the budget at most
        # (plus allocator slack).
        assert grown <= 2 * budget, f"RSS grew {grown / MiB:.1f} MiB for an 8 MiB budget"
    finally:
        stop_process(proc)
