"""Cost per Check: the empty-handler floor vs the full JWT decision, cached and uncached.

One command, one run, side by side on the same machine:

    .venv/bin/python -m bench.authz_bench [--seconds 5] [--concurrency 32]

Each server runs in its own process on a unix socket; a grpc.aio client in this
process keeps `concurrency` Checks in flight. For each case it reports req/s and
the server process's CPU microseconds per request (from /proc/PID/stat), and the
ratio to the empty-handler floor. It also times the pure decision (`decide`)
without transport. Results are printed as a Markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
from envoy.service.auth.v3 import external_auth_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from authz_service.doors.grpc_wire import to_context
from authz_service.keys.registry import KeyRegistry
from authz_service.policy.engine import decide
from authz_service.policy.loading import load_policy
from bench.procstats import cpu_seconds
from tests.kits import jwt_kit
from tests.kits.grpc_kit import check_request

ROOT = Path(__file__).resolve().parent.parent


CLK_TCK = os.sysconf("SC_CLK_TCK")

CONFIG = """
identities:
  - name: idp
    jwt:
      issuer: {issuer}
      audiences: [{audience}]
      jwks_file: {jwks}
      algorithms: [RS256, ES256]
routes:
  - name: orders-read
    match: {{methods: [GET], path: {{template: "/orders/{{id}}"}}}}
    require: {{scopes: {{all_of: ["orders:read"]}}}}
token_cache: {{max_entries: {cache}}}
"""




def wait_serving(address: str, proc: subprocess.Popen[bytes]) -> None:
    channel = grpc.insecure_channel(address)
    stub = health_pb2_grpc.HealthStub(channel)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
            channel.close()
            return
        except grpc.RpcError:
            time.sleep(0.05)
    raise SystemExit("server did not become healthy")


async def drive(
    address: str, requests: list[bytes], seconds: float, concurrency: int
) -> tuple[int, int]:
    """Send Checks for `seconds`; return (completed, allowed)."""
    async with grpc.aio.insecure_channel(address) as channel:
        check = channel.unary_unary(
            "/envoy.service.auth.v3.Authorization/Check",
            request_serializer=None,
            response_deserializer=external_auth_pb2.CheckResponse.FromString,
        )
        done = 0
        allowed = 0
        stop_at = time.monotonic() + seconds

        async def worker(offset: int) -> None:
            nonlocal done, allowed
            i = offset
            while time.monotonic() < stop_at:
                response = await check(requests[i % len(requests)])
                i += concurrency
                done += 1
                allowed += response.status.code == 0

        await asyncio.gather(*(worker(i) for i in range(concurrency)))
        return done, allowed


def measure(
    name: str, argv: list[str], address: str, requests: list[bytes], args: argparse.Namespace
) -> dict[str, float | str]:
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_serving(address, proc)
        asyncio.run(drive(address, requests, 1.0, args.concurrency))  # warm-up
        cpu0, t0 = cpu_seconds(proc.pid), time.monotonic()
        done, allowed = asyncio.run(drive(address, requests, args.seconds, args.concurrency))
        cpu1, t1 = cpu_seconds(proc.pid), time.monotonic()
    finally:
        proc.terminate()
        proc.wait(10)
    return {
        "case": name,
        "rps": done / (t1 - t0),
        "cpu_us": (cpu1 - cpu0) / done * 1e6,
        "allowed": allowed / done,
    }


def pure_decision_us(config: Path, tokens: list[str], cached: bool) -> float:
    policy = load_policy(config, KeyRegistry())
    contexts = [
        to_context(check_request(headers={"authorization": f"Bearer {t}"})) for t in tokens
    ]
    now = time.time()
    if cached:
        for ctx in contexts:
            decide(policy, ctx, now)
    n = len(contexts)
    start = time.perf_counter()
    for ctx in contexts:
        decide(policy, ctx, now)
    return (time.perf_counter() - start) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="tollgate-bench-"))
    key = jwt_kit.rsa_key("bench-rsa")
    (work / "jwks.json").write_text(json.dumps(jwt_kit.jwks(key)))
    for cache in (0, 100_000):
        (work / f"authz-{cache}.yaml").write_text(
            CONFIG.format(
                issuer=jwt_kit.ISSUER, audience=jwt_kit.AUDIENCE, jwks=work / "jwks.json",
                cache=cache,
            )
        )
    token = jwt_kit.mint(key, exp=int(time.time()) + 3600)
    distinct = [jwt_kit.mint(key, jti=str(i), exp=int(time.time()) + 3600) for i in range(2000)]

    def serialized(tokens: list[str]) -> list[bytes]:
        return [
            check_request(headers={"authorization": f"Bearer {t}"}).SerializeToString()
            for t in tokens
        ]

    bin_dir = Path(sys.executable).parent
    address = f"unix:{work}/bench.sock"
    rows = [
        measure(
            "empty handler (floor)",
            [sys.executable, str(ROOT / "bench" / "empty_authz.py"), address],
            address, serialized([token]), args,
        ),
        measure(
            "authz: RS256 JWT, cached",
            [str(bin_dir / "authz-service"), "--http-address", "off", "--config", str(work / "authz-100000.yaml"),
             "--grpc-address", address, "--log-level", "error"],
            address, serialized([token]), args,
        ),
        measure(
            "authz: RS256 JWT, uncached (cache off)",
            [str(bin_dir / "authz-service"), "--http-address", "off", "--config", str(work / "authz-0.yaml"),
             "--grpc-address", address, "--log-level", "error"],
            address, serialized(distinct), args,
        ),
    ]
    floor = rows[0]
    print(f"\nconcurrency {args.concurrency}, {args.seconds:.0f} s per case, unix socket\n")
    print("| case | req/s | server CPU µs/req | CPU vs floor | allowed |")
    print("|---|---:|---:|---:|---:|")
    for row in rows:
        ratio = float(row["cpu_us"]) / float(floor["cpu_us"])
        print(
            f"| {row['case']} | {row['rps']:.0f} | {row['cpu_us']:.0f} | {ratio:.2f}x "
            f"| {float(row['allowed']):.0%} |"
        )
    cached_us = pure_decision_us(work / "authz-100000.yaml", [token] * 5000, cached=True)
    uncached_us = pure_decision_us(work / "authz-0.yaml", distinct[:500], cached=False)
    print("\nPure decision (decide(), no transport, adapter included):")
    print(f"- cached token: {cached_us:.1f} µs per decision")
    print(f"- uncached RS256 token: {uncached_us:.1f} µs per decision")


if __name__ == "__main__":
    main()
