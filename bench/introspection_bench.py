"""Introspection against a real local endpoint, through the pipeline (no transport):

    .venv/bin/python -m bench.introspection_bench [--runs 10]

- the first exchange after start and the next ones (a new token each: cache misses),
- a Check over a hung endpoint, per `wait_seconds`: the longest answer of `--runs`,
- N concurrent Checks of one new token against a 50 ms endpoint: calls it received.

Printed as Markdown rows for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import tempfile
import time
from pathlib import Path

from authz_service.keys.registry import KeyRegistry
from authz_service.models import Answer, Deny, RequestContext
from authz_service.pipeline import Pipeline
from authz_service.policy.loading import load_policy
from tests.kits.introspection_kit import Endpoint, introspection_endpoint
from tollgate.reload import ConfigHolder

ROOT = Path(__file__).resolve().parent.parent


CONFIG = """
identities:
  - name: opaque
    introspection:
      endpoint: {url}
      client: {{method: client_secret_basic, client_id: bench, client_secret_env: BENCH_SECRET}}
      audiences: any
      wait_seconds: {wait}
      timeout_seconds: 5
routes:
  - name: orders
    match: {{path: {{prefix: /orders}}}}
"""


def service(endpoint: Endpoint, wait: float) -> tuple[Pipeline, KeyRegistry]:
    path = Path(tempfile.mkdtemp(prefix="tg-ib-")) / "authz.yaml"
    path.write_text(CONFIG.format(url=endpoint.url, wait=wait))
    keys = KeyRegistry()
    return Pipeline(ConfigHolder(load_policy(path, keys)), keys), keys


def ask(pipeline: Pipeline, token: str) -> RequestContext:
    return RequestContext("GET", "/orders/1", headers={"authorization": f"Bearer {token}"})


async def timed(pipeline: Pipeline, token: str) -> tuple[float, Answer]:
    started = time.perf_counter()
    answer = await pipeline.decide(ask(pipeline, token))
    return (time.perf_counter() - started) * 1000, answer


def code(answer: Answer) -> str:
    return answer.decision.code if isinstance(answer.decision, Deny) else "ok"


async def misses(endpoint: Endpoint) -> None:
    pipeline, keys = service(endpoint, 2.0)
    for i in range(21):
        endpoint.active(f"miss-{i}")
    first, answer = await timed(pipeline, "miss-0")
    rest = sorted([(await timed(pipeline, f"miss-{i}"))[0] for i in range(1, 21)])
    print(f"| a cache miss: the first exchange after start / median of the next 20 | "
          f"{first:.1f} ms / {rest[10]:.1f} ms | {code(answer)} |")
    cached = sorted([(await timed(pipeline, "miss-1"))[0] for _ in range(20)])
    print(f"| a cached token (median of 20, pipeline only) | {cached[10] * 1000:.0f} µs | ok |")
    await keys.close()


async def hung(endpoint: Endpoint, wait: float, runs: int) -> None:
    pipeline, keys = service(endpoint, wait)
    endpoint.delay = 60
    worst, codes = 0.0, set()
    for i in range(runs):
        elapsed, answer = await timed(pipeline, f"hung-{wait}-{i}")
        worst, codes = max(worst, elapsed), codes | {code(answer)}
    endpoint.delay = 0
    endpoint.release.set()
    endpoint.release.clear()
    print(f"| a Check over a hung endpoint, wait_seconds {wait} (worst of {runs}) | "
          f"{worst:.0f} ms ({worst / 1000 / wait:.2f}x) | {', '.join(sorted(codes))} |")
    await keys.close()


async def burst(endpoint: Endpoint, count: int) -> None:
    pipeline, keys = service(endpoint, 2.0)
    endpoint.active("burst")
    endpoint.delay = 0.05
    before = endpoint.calls()
    answers = await asyncio.gather(*(pipeline.decide(ask(pipeline, "burst"))
                                     for _ in range(count)))
    endpoint.delay = 0
    codes = {code(a) for a in answers}
    print(f"| {count} concurrent Checks of one new token (endpoint answers in 50 ms) | "
          f"{endpoint.calls() - before} call | {', '.join(sorted(codes))} |")
    await keys.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    os.environ.setdefault("BENCH_SECRET", "bench-secret")
    logging.getLogger("authz.introspection").setLevel(logging.ERROR)  # the hung runs' warnings
    print("| case | figure | answers |\n|---|---:|---|")
    with introspection_endpoint() as endpoint:
        asyncio.run(misses(endpoint))
        for wait in (0.2, 0.4):
            asyncio.run(hung(endpoint, wait, args.runs))
        asyncio.run(burst(endpoint, 200))


if __name__ == "__main__":
    main()
