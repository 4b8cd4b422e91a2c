"""Fuzzed CheckRequests: wrong allows and fail-opens, in process and through the service.

    .venv/bin/python -m bench.fuzz_authz [--requests 1000000] [--grpc 50000] [--seed 1]

Builds the fuzz policy of tests/reliability/authz_fuzz_kit.py (JWT from a JWKS
file, an API key, an mTLS principal, an anonymous route) and decides `requests`
hostile CheckRequests in process (adapter -> engine -> adapter, as the service
does), each judged by the kit's independent oracle. Then sends `grpc` of them to
a real authz-service over gRPC on a unix socket with the same policy and checks
every answer against the in-process decision and the oracle.

Reports: wrong allows (an allow the oracle cannot explain), fail-opens (an allow,
or a gRPC error Envoy could turn into one, caused by request content), internal
errors (each one answered deny), the answers by code, and the rate.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import subprocess
import tempfile
import time
from collections import Counter
from pathlib import Path

import grpc
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc

from bench.authz_bench import wait_serving
from tests.kits.authz_fuzz_kit import FuzzTarget

ROOT = Path(__file__).resolve().parent.parent



def in_process(target: FuzzTarget, rng: random.Random, n: int) -> tuple[Counter[str], float]:
    tally: Counter[str] = Counter()
    started = time.perf_counter()
    for _ in range(n):
        outcome = target.decide(target.request(rng))
        tally["allowed" if outcome.allowed else "denied"] += 1
        tally["wrong_allow"] += outcome.wrong_allow
        tally["internal_error"] += outcome.internal_error
    return tally, time.perf_counter() - started


async def through_grpc(
    target: FuzzTarget, socket: str, requests: list[external_auth_pb2.CheckRequest]
) -> Counter[str]:
    tally: Counter[str] = Counter()
    async with grpc.aio.insecure_channel(socket) as channel:
        stub = external_auth_pb2_grpc.AuthorizationStub(channel)
        queue = list(enumerate(requests))

        async def worker() -> None:
            while queue:
                _, request = queue.pop()
                expected = target.decide(request)
                try:
                    answer = await stub.Check(request, timeout=5)
                except grpc.aio.AioRpcError as exc:
                    # Envoy's failure_mode_allow would decide: counted as a fail-open risk.
                    tally[f"grpc_{exc.code().name}"] += 1
                    tally["fail_open"] += 1
                    continue
                allowed = answer.status.code == 0
                tally["allowed" if allowed else "denied"] += 1
                if allowed and not expected.allowed:
                    tally["fail_open"] += 1  # the service allowed what the engine denies
                if allowed != expected.allowed:
                    tally["disagree"] += 1
                if allowed and not target.oracle_allows(request, _decision_of(target, request)):
                    tally["wrong_allow"] += 1

        await asyncio.gather(*(worker() for _ in range(16)))
    return tally


def _decision_of(target: FuzzTarget, request: external_auth_pb2.CheckRequest) -> object:
    from authz_service.doors.grpc_wire import to_context  # noqa: PLC0415
    from authz_service.policy.engine import NeedKeys, decide  # noqa: PLC0415

    decision = decide(target.policy, to_context(request), target.now)
    return decision.fallback if isinstance(decision, NeedKeys) else decision


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=1_000_000)
    parser.add_argument("--grpc", type=int, default=50_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="fuzz-authz-"))
    target = FuzzTarget.build(workdir)
    rng = random.Random(args.seed)

    tally, seconds = in_process(target, rng, args.requests)
    print(f"## In process: {args.requests:,} fuzzed CheckRequests (seed {args.seed})\n")
    print("| allowed | denied | wrong allows | internal errors (answered deny) | µs/request |")
    print("|---:|---:|---:|---:|---:|")
    print(f"| {tally['allowed']:,} | {tally['denied']:,} | **{tally['wrong_allow']}** | "
          f"{tally['internal_error']} | {seconds / args.requests * 1e6:.0f} |")
    print("\nAnswers by code: " + ", ".join(
        f"{code} {count:,}" for code, count in sorted(target.counts.items(), key=lambda c: -c[1])))

    if args.grpc:
        socket = workdir / "authz.sock"
        with (workdir / "authz.log").open("wb") as log:
            proc = subprocess.Popen(
                [str(ROOT / ".venv/bin/authz-service"), "--config", str(workdir / "authz.yaml"),
                 "--grpc-address", f"unix:{socket}", "--log-level", "warning"],
                stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_serving(f"unix:{socket}", proc)
            requests = [target.request(rng) for _ in range(args.grpc)]
            started = time.perf_counter()
            over_grpc = asyncio.run(through_grpc(target, f"unix:{socket}", requests))
            elapsed = time.perf_counter() - started
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        print(f"\n## Through authz-service over gRPC: {args.grpc:,} of them\n")
        print("| allowed | denied | wrong allows | fail-opens | gRPC errors | "
              "answers unlike in process | req/s |")
        print("|---:|---:|---:|---:|---:|---:|---:|")
        errors = sum(v for k, v in over_grpc.items() if k.startswith("grpc_"))
        print(f"| {over_grpc['allowed']:,} | {over_grpc['denied']:,} | "
              f"**{over_grpc['wrong_allow']}** | **{over_grpc['fail_open']}** | {errors} | "
              f"{over_grpc['disagree']} | {args.grpc / elapsed:,.0f} |")


if __name__ == "__main__":
    main()
