"""Our Redis fixed-window decision vs the `limits` library's, on the same Redis.

    .venv/bin/python -m bench.limits_peer [--seconds 4] [--runs 3] [--concurrency 32] [--subjects 1000]

Both run in this process on one asyncio loop (uvloop), with no gRPC in front, so
the figure is the rate-limit engine and its Redis client alone: ours is
RateLimiter + RedisStore (one EVALSHA per request over its pipelined RESP
connection); the peer is limits' FixedWindowRateLimiter.hit on its async Redis
storage (redis-py implementation). Same redis-server (started here on a free
port), same subjects, same limit (never reached), same concurrency, alternated
`--runs` times; each pair's ratio and their median are reported, with the commands
Redis ran per decision (INFO commandstats, a script's inner commands included) and,
for ours, the script calls on the wire per decision (concurrent decisions share one).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import uvloop
from limits import RateLimitItemPerMinute
from limits.aio.strategies import FixedWindowRateLimiter
from limits.storage import storage_from_string

from bench.envoy_bench import redis_commands
from ratelimit_service.config import build_domain
from ratelimit_service.decision import DecisionSettings
from ratelimit_service.limiter import RateLimiter
from ratelimit_service.models import Descriptor, Entry, RateLimitQuery
from ratelimit_service.rules import RuleSet
from ratelimit_service.stores.redis import RedisOptions, RedisStore, connect_single
from tests.kits.processes import binary, free_port, stop_process, wait_for
from tollgate.config import parse_config_text
from tollgate.reload import ConfigHolder

ROOT = Path(__file__).resolve().parent.parent


LIMIT = 1_000_000_000
CONFIG = f"""
domain: bench
descriptors:
  - key: subject
    rate_limit: {{unit: minute, requests_per_unit: {LIMIT}}}
"""


async def drive(decide: Callable[[int], Awaitable[object]], seconds: float,
                concurrency: int) -> int:
    done = 0
    stop_at = time.monotonic() + seconds

    async def worker(offset: int) -> None:
        nonlocal done
        i = offset
        while time.monotonic() < stop_at:
            await decide(i)
            i += concurrency
            done += 1

    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    return done


STORES: list[RedisStore] = []


async def ours(url: str, args: argparse.Namespace) -> Callable[[int], Awaitable[object]]:
    rules = RuleSet({"bench": parse_config_text(CONFIG, "bench.yaml", build_domain)})
    store = RedisStore(connect_single(url, RedisOptions()))
    STORES.append(store)
    limiter = RateLimiter(ConfigHolder(rules), store, DecisionSettings(), clock=time.time)
    queries = [
        RateLimitQuery("bench", (Descriptor((Entry("subject", f"user-{i}"),)),))
        for i in range(args.subjects)
    ]

    async def decide(i: int) -> object:
        return await limiter.should_rate_limit(queries[i % args.subjects])

    return decide


async def peer(url: str, args: argparse.Namespace) -> Callable[[int], Awaitable[object]]:
    storage = storage_from_string(url.replace("redis://", "async+redis://"),
                                  implementation="redispy")
    limiter = FixedWindowRateLimiter(storage)
    item = RateLimitItemPerMinute(LIMIT)
    subjects = [f"user-{i}" for i in range(args.subjects)]

    async def decide(i: int) -> object:
        return await limiter.hit(item, "subject", subjects[i % args.subjects])

    return decide


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--subjects", type=int, default=1000)
    args = parser.parse_args()
    port = free_port()
    redis = subprocess.Popen(
        [binary("redis-server"), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    results: dict[str, list[tuple[float, float, float]]] = {"tollgate": [], "limits": []}
    try:
        wait_for(lambda: subprocess.run([binary("redis-cli"), "-p", str(port), "ping"],
                                        capture_output=True, text=True, check=False
                                        ).stdout.strip() == "PONG", 20, "redis-server")

        async def run_all() -> None:
            engines = {"tollgate": await ours(url, args), "limits": await peer(url, args)}
            for decide in engines.values():  # warm-up: connections, scripts
                await drive(decide, 1.0, args.concurrency)
            for _ in range(args.runs):
                for name, decide in engines.items():
                    before = redis_commands(port)
                    sent = STORES[0].calls_sent
                    done = await drive(decide, args.seconds, args.concurrency)
                    calls = redis_commands(port) - before
                    wire = (STORES[0].calls_sent - sent) / max(done, 1) if name == "tollgate" \
                        else float("nan")
                    results[name].append((done / args.seconds, calls / max(done, 1), wire))

        uvloop.run(run_all())
    finally:
        stop_process(redis)
    ratios = [ours_run[0] / peer_run[0]
              for ours_run, peer_run in zip(results["tollgate"], results["limits"], strict=True)]
    print(f"\nconcurrency {args.concurrency}, {args.subjects} subjects, "
          f"{args.seconds:.0f} s per run, {args.runs} runs alternated\n")
    print("| engine | decisions/s (median) | vs limits, per run | vs limits (median) "
          "| Redis commands/decision | script calls on the wire/decision |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, runs in results.items():
        rps = statistics.median(r[0] for r in runs)
        per = ", ".join(f"{x:.2f}" for x in ratios) if name == "tollgate" else "-"
        median = f"{statistics.median(ratios):.2f}x" if name == "tollgate" else "1.00x"
        wire = f"{statistics.median(r[2] for r in runs):.3f}" if name == "tollgate" else "-"
        print(f"| {name} | {rps:,.0f} | {per} | {median} "
              f"| {statistics.median(r[1] for r in runs):.2f} | {wire} |")


if __name__ == "__main__":
    main()
