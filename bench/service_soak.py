"""RSS of the real service processes after 1M requests over 100k distinct subjects.

    .venv/bin/python -m bench.service_soak [--requests 1000000] [--subjects 100000]

Starts authz-service and ratelimit-service (each on a unix socket, default
settings, in-memory counters), then sends each one `requests` Checks /
ShouldRateLimit calls over gRPC, cycling through `subjects` distinct subjects (one
ES256 token per subject for authz, one descriptor value per subject for rate
limiting), 32 in flight. Reports each process's RSS when idle, its peak (VmHWM)
and its RSS at the end. bench/rss_soak.py measures the engines alone, in-process.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import uvloop
from envoy.service.auth.v3 import external_auth_pb2
from envoy.service.ratelimit.v3 import rls_pb2

from bench.authz_bench import wait_serving
from tests.kits import jwt_kit
from tests.kits.grpc_kit import check_request
from tests.kits.ratelimit_kit import descriptor, request

ROOT = Path(__file__).resolve().parent.parent


AUTHZ_CONFIG = """
identities:
  - name: idp
    jwt: {{issuer: {issuer}, audiences: [{audience}], jwks_file: {jwks}, algorithms: [ES256]}}
routes:
  - name: orders
    match: {{path: {{template: "/orders/{{id}}"}}}}
    require: {{scopes: {{all_of: ["orders:read"]}}}}
"""
RATELIMIT_CONFIG = """
domain: soak
descriptors:
  - key: plan
    descriptors:
      - key: subject
        rate_limit: {unit: minute, requests_per_unit: 1000}
"""


def memory_mb(pid: int) -> dict[str, float]:
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return {name: int(fields[name].split()[0]) / 1024 for name in ("VmRSS", "VmHWM")}


async def send_all(
    address: str, method: str, requests: list[bytes], total: int, ok: Callable[[bytes], bool]
) -> tuple[int, int]:
    """Send `total` calls; return (done, failed among every 100th answer checked)."""
    async with grpc.aio.insecure_channel(address) as channel:
        call = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
        done = failed = 0

        async def worker(offset: int) -> None:
            nonlocal done, failed
            for n in range(offset, total, 32):
                answer = await call(requests[n % len(requests)])
                done += 1
                if n % 100 == 0 and not ok(answer):
                    failed += 1

        await asyncio.gather(*(worker(i) for i in range(32)))
        return done, failed


def soak(name: str, argv: list[str], address: str, method: str, *, requests: list[bytes],
         total: int, ok: Callable[[bytes], bool]) -> dict[str, float | str]:
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_serving(address, proc)
        idle = memory_mb(proc.pid)["VmRSS"]
        started = time.monotonic()
        done, failed = uvloop.run(send_all(address, method, requests, total, ok))
        seconds = time.monotonic() - started
        end = memory_mb(proc.pid)
    finally:
        proc.terminate()
        proc.wait(10)
    if failed:
        raise SystemExit(f"{name}: {failed} of the sampled answers were not OK")
    return {"service": name, "requests": done, "seconds": seconds, "idle_mb": idle,
            "peak_mb": end["VmHWM"], "end_mb": end["VmRSS"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=1_000_000)
    parser.add_argument("--subjects", type=int, default=100_000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tollgate-soak-"))
    key = jwt_kit.ec_key("soak")
    (work / "jwks.json").write_text(json.dumps(jwt_kit.jwks(key)))
    (work / "authz.yaml").write_text(AUTHZ_CONFIG.format(
        issuer=jwt_kit.ISSUER, audience=jwt_kit.AUDIENCE, jwks=work / "jwks.json"))
    (work / "ratelimit.yaml").write_text(RATELIMIT_CONFIG)
    exp = int(time.time()) + 3600
    bin_dir = Path(sys.executable).parent
    def allowed(answer: bytes) -> bool:
        return external_auth_pb2.CheckResponse.FromString(answer).status.code == 0

    def within_limit(answer: bytes) -> bool:
        return rls_pb2.RateLimitResponse.FromString(answer).overall_code == rls_pb2.RateLimitResponse.OK

    cases: list[tuple[str, Callable[[int], bytes], list[str], str, Callable[[bytes], bool]]] = [
        ("authz-service",
         lambda i: check_request(headers={"authorization": "Bearer " + jwt_kit.mint(
             key, sub=f"user-{i}", plan="free", tenant=f"t{i % 100}", exp=exp)}
         ).SerializeToString(),
         [str(bin_dir / "authz-service"), "--http-address", "off", "--config", str(work / "authz.yaml"),
          "--log-level", "error"],
         "/envoy.service.auth.v3.Authorization/Check", allowed),
        ("ratelimit-service",
         lambda i: request("soak", descriptor(("plan", "free"), ("subject", f"u{i}")))
         .SerializeToString(),
         [str(bin_dir / "ratelimit-service"), "--config", str(work / "ratelimit.yaml"),
          "--log-level", "error"],
         "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit", within_limit),
    ]
    rows = []
    for name, build, argv, method, ok in cases:
        requests = [build(i) for i in range(args.subjects)]
        address = f"unix:{work}/{name}.sock"
        print(f"== {name}", flush=True)
        rows.append(soak(name, [*argv, "--grpc-address", address], address, method,
                         requests=requests, total=args.requests, ok=ok))
    print(f"\n{args.requests} requests over {args.subjects} subjects, over gRPC, 32 in flight\n")
    print("| service | requests | seconds | RSS idle MB | peak RSS MB | RSS at end MB |")
    print("|---|---:|---:|---:|---:|---:|")
    for row in rows:
        print(f"| {row['service']} | {row['requests']} | {row['seconds']:.0f} "
              f"| {row['idle_mb']:.0f} | {row['peak_mb']:.0f} | {row['end_mb']:.0f} |")


if __name__ == "__main__":
    main()
