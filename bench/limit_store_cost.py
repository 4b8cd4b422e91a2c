"""What a rate limit in the Check costs the service, by store and by concurrent checks.

    .venv/bin/python -m bench.limit_store_cost [--checks 20000] [--concurrency 1,4,32]

The authz pipeline (cached RS256 JWT, scope, one per-subject limit as
bench/envoy_bench.py's `_limit_` cases) decides checks in this process on one uvloop
loop, as the HTTP door drives it (tollgate.eager.start: no task unless a check waits),
with N checks in flight at once; the CPU time of this process per check is reported
for no limit, the memory store, Redis (a redis-server started here on a free port,
its own CPU not counted) and Redis with `lease_hits=100` (stores/leases.py), with the
Redis calls sent per check. Each concurrency is run for the four cases back to back,
so their ratios are side by side.

Redis costs per *round trip*, not per check: concurrent checks share one script call
(stores/redis.py), so the cost per check falls as more are in flight together.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import uvloop

from bench.envoy_bench import AUTHZ_CONFIG, AUTHZ_LIMITS, RATELIMIT_CONFIG
from tests.kits import jwt_kit
from tests.kits.redis_procs import RedisProcess

CASES = ("no limit", "memory", "redis", "redis leased")


async def _pipeline(work: Path, case: str, redis_url: str) -> tuple[Any, Any, Any]:
    from authz_service.keys.registry import KeyRegistry  # noqa: PLC0415
    from authz_service.limits.stage import LimitCounter  # noqa: PLC0415
    from authz_service.models import RequestContext  # noqa: PLC0415
    from authz_service.pipeline import Pipeline  # noqa: PLC0415
    from authz_service.policy.loading import load_policy  # noqa: PLC0415
    from ratelimit_service.stores.factory import StoreSettings, build_store  # noqa: PLC0415
    from tollgate.reload import ConfigHolder  # noqa: PLC0415

    key = jwt_kit.rsa_key("bench")
    (work / "jwks.json").write_text(json.dumps(jwt_kit.jwks(key)))
    (work / "ratelimit.yaml").write_text(RATELIMIT_CONFIG)
    policy = AUTHZ_CONFIG.format(issuer=jwt_kit.ISSUER, audience=jwt_kit.AUDIENCE,
                                 jwks=work / "jwks.json")
    if case != "no limit":
        policy += AUTHZ_LIMITS.format(rules=work / "ratelimit.yaml")
    (work / "authz.yaml").write_text(policy)
    store, _ = build_store(StoreSettings(url=redis_url if case.startswith("redis") else "",
                                         timeout=1.0,
                                         lease_hits=100 if case == "redis leased" else 0))
    keys = KeyRegistry()
    pipeline = Pipeline(ConfigHolder(load_policy(work / "authz.yaml", keys)), keys,
                        LimitCounter(store))
    token = jwt_kit.mint(key, exp=int(time.time()) + 3600, scope="orders:read")
    ctx = RequestContext("GET", "/orders/1", headers={"authorization": f"Bearer {token}"})
    first = await pipeline.decide(ctx)
    if first.identity is None or first.decision.__class__.__name__ != "Allow":
        raise SystemExit(f"{case}: the first check was not an allow: {first.decision!r}")
    return pipeline, ctx, store


async def _measure(pipeline: Any, ctx: Any, checks: int, concurrency: int) -> float:
    from tollgate.eager import start  # noqa: PLC0415

    async def caller() -> None:
        for _ in range(checks // concurrency):
            answer = start(pipeline.decide(ctx))
            if isinstance(answer, asyncio.Future):
                answer = await answer
            if answer.identity is None:
                raise SystemExit(f"a check was refused: {answer.decision!r}")

    await asyncio.gather(*(caller() for _ in range(concurrency)))  # warm
    started = time.process_time()
    await asyncio.gather(*(caller() for _ in range(concurrency)))
    return (time.process_time() - started) / (checks // concurrency * concurrency) * 1e6


async def run(args: argparse.Namespace, redis_url: str, work: Path) -> list[dict[str, Any]]:
    built = {case: await _pipeline(work / case.replace(" ", "-"), case, redis_url)
             for case in CASES}
    rows = []
    for concurrency in (int(c) for c in args.concurrency.split(",")):
        row: dict[str, Any] = {"concurrency": concurrency}
        for case in CASES:
            pipeline, ctx, store = built[case]
            sent = getattr(store, "calls_sent", 0)
            row[case] = await _measure(pipeline, ctx, args.checks, concurrency)
            if case.startswith("redis"):
                row[f"{case} calls"] = (store.calls_sent - sent) / (2 * args.checks)
        rows.append(row)
    for _, _, store in built.values():
        await store.close()
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| checks in flight | no limit µs | memory µs | Redis µs | Redis leased µs "
             "| memory vs none | Redis vs none | leased vs none | Redis calls per check "
             "(leased) |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        none = r["no limit"]
        lines.append(f"| {r['concurrency']} | {none:.1f} | {r['memory']:.1f} | "
                     f"{r['redis']:.1f} | {r['redis leased']:.1f} | "
                     f"{none / r['memory']:.2f}x | {none / r['redis']:.2f}x | "
                     f"{none / r['redis leased']:.2f}x | "
                     f"{r['redis calls']:.2f} ({r['redis leased calls']:.3f}) |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--checks", type=int, default=20_000)
    parser.add_argument("--concurrency", default="1,4,32")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="limit-store-cost-") as tmp:
        work = Path(tmp)
        for case in CASES:
            (work / case.replace(" ", "-")).mkdir()
        redis = RedisProcess(work)
        redis.start()
        try:
            rows = uvloop.run(run(args, f"{redis.url}/0", work))
        finally:
            redis.stop()
    print("CPU time of this process per check (the authz pipeline, no door); "
          "`vs none`: checks per CPU second against no limit.\n")
    print(table(rows))


if __name__ == "__main__":
    main()
