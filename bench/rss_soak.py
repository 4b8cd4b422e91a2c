"""Memory after 1M decisions over 100k distinct subjects, per service engine.

    .venv/bin/python -m bench.rss_soak [--requests 1000000] [--subjects 100000]

Each engine runs in its own fresh process (so its peak RSS is its own): the authz
decision (adapter + engine, ES256 tokens, one per subject, token cache at its
default bound) and the ratelimit decision (RateLimiter + in-memory store, one
descriptor per subject, a per-minute limit). Requests cycle through the subjects
in order. Reports peak RSS (VmHWM) and RSS at the end. gRPC itself keeps no
per-subject state, so the services' RSS is this plus their idle footprint.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.procstats import memory_mb

ROOT = Path(__file__).resolve().parent.parent




def authz(requests: int, subjects: int) -> None:
    from authz_service.doors.grpc_wire import AnswerEncoder, to_context  # noqa: PLC0415
    from authz_service.keys.registry import KeyRegistry  # noqa: PLC0415
    from authz_service.models import Answer  # noqa: PLC0415
    from authz_service.policy.engine import decide  # noqa: PLC0415
    from authz_service.policy.loading import load_policy  # noqa: PLC0415
    from tests.kits import jwt_kit  # noqa: PLC0415
    from tests.kits.grpc_kit import check_request  # noqa: PLC0415

    work = Path(tempfile.mkdtemp())
    key = jwt_kit.ec_key("soak")
    (work / "jwks.json").write_text(json.dumps(jwt_kit.jwks(key)))
    (work / "authz.yaml").write_text(f"""
identities:
  - name: idp
    jwt: {{issuer: {jwt_kit.ISSUER}, audiences: [{jwt_kit.AUDIENCE}],
           jwks_file: {work / 'jwks.json'}, algorithms: [ES256]}}
routes:
  - name: orders
    match: {{path: {{template: "/orders/{{id}}"}}}}
    require: {{scopes: {{all_of: ["orders:read"]}}}}
""")
    policy = load_policy(work / "authz.yaml", KeyRegistry())
    exp = int(time.time()) + 3600
    requests_raw = [
        check_request(headers={"authorization": "Bearer " + jwt_kit.mint(
            key, sub=f"user-{i}", plan="free", tenant=f"t{i % 100}", exp=exp)}
        ).SerializeToString()
        for i in range(subjects)
    ]
    from envoy.service.auth.v3 import external_auth_pb2  # noqa: PLC0415

    base = memory_mb()
    now = time.time()
    allowed = 0
    encoder = AnswerEncoder()
    for n in range(requests):
        request = external_auth_pb2.CheckRequest.FromString(requests_raw[n % subjects])
        outcome = decide(policy, to_context(request), now)
        wire = encoder.encode(Answer(outcome), "")  # type: ignore[arg-type]
        response = external_auth_pb2.CheckResponse.FromString(wire)
        allowed += response.status.code == 0
    peak, end = memory_mb()
    print(json.dumps({"engine": "authz", "allowed": allowed, "requests": requests,
                      "cache_entries": len(policy.caches.tokens), "rss_before_mb": base[1],
                      "peak_mb": peak, "end_mb": end}))


def ratelimit(requests: int, subjects: int) -> None:
    from ratelimit_service.config import build_domain  # noqa: PLC0415
    from ratelimit_service.decision import DecisionSettings  # noqa: PLC0415
    from ratelimit_service.limiter import RateLimiter  # noqa: PLC0415
    from ratelimit_service.models import Descriptor, Entry, RateLimitQuery  # noqa: PLC0415
    from ratelimit_service.rules import RuleSet  # noqa: PLC0415
    from ratelimit_service.stores.memory import MemoryStore  # noqa: PLC0415
    from tollgate.config import parse_config_text  # noqa: PLC0415
    from tollgate.reload import ConfigHolder  # noqa: PLC0415

    config = ("domain: soak\ndescriptors:\n  - key: plan\n    descriptors:\n"
              "      - key: subject\n        rate_limit: {unit: minute, requests_per_unit: 1000}\n")
    rules = RuleSet({"soak": parse_config_text(config, "soak.yaml", build_domain)})
    limiter = RateLimiter(ConfigHolder(rules), MemoryStore(), DecisionSettings(), clock=time.time)
    queries = [
        RateLimitQuery("soak", (Descriptor((Entry("plan", "free"), Entry("subject", f"u{i}"))),))
        for i in range(subjects)
    ]
    base = memory_mb()

    async def run() -> int:
        ok = 0
        for n in range(requests):
            decision = await limiter.should_rate_limit(queries[n % subjects])
            ok += decision is not None
        return ok

    done = asyncio.run(run())
    peak, end = memory_mb()
    print(json.dumps({"engine": "ratelimit", "requests": done, "rss_before_mb": base[1],
                      "peak_mb": peak, "end_mb": end}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=1_000_000)
    parser.add_argument("--subjects", type=int, default=100_000)
    parser.add_argument("--engine", choices=["authz", "ratelimit"])
    args = parser.parse_args()
    if args.engine == "authz":
        authz(args.requests, args.subjects)
        return
    if args.engine == "ratelimit":
        ratelimit(args.requests, args.subjects)
        return
    rows = []
    for engine in ("authz", "ratelimit"):
        out = subprocess.run(
            [sys.executable, __file__, "--engine", engine, "--requests", str(args.requests),
             "--subjects", str(args.subjects)],
            capture_output=True, text=True, check=True,
        ).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    print(f"\n{args.requests} decisions over {args.subjects} subjects, one process per engine\n")
    print("| engine | RSS before MB | peak RSS MB | RSS at end MB |")
    print("|---|---:|---:|---:|")
    for row in rows:
        print(f"| {row['engine']} | {row['rss_before_mb']:.0f} | {row['peak_mb']:.0f} "
              f"| {row['end_mb']:.0f} |")


if __name__ == "__main__":
    main()
