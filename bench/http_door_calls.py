"""The HTTP door's per-check cost for a cached token, in instructions (deterministic).

Runs N checks of one cached-token request through HttpCheckDoor.__call__ (parse the
request into a context, decide, render the allow), in process; under callgrind the
difference of two runs divided by the difference of N is the instructions per check:

    for n in 1000 6000; do valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.$n \\
        .venv/bin/python -m bench.http_door_calls $n; done
    # per check = (Ir(6000) - Ir(1000)) / 5000 (valgrind prints "Collected")

`--forwarded nginx` measures the forwarded mode's door instead; `--limit` adds one
rate limit per subject decided in the check (in-memory counters), as
`python -m bench.envoy_bench`'s http_authz_limit_memory case does.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from authz_service.doors.http import HttpCheckDoor
from authz_service.keys.registry import KeyRegistry
from authz_service.pipeline import Pipeline
from authz_service.policy.loading import load_policy

# The limit envoy_bench's http_authz_limit_memory case decides, so the two measure one thing.
from bench.envoy_bench import AUTHZ_LIMITS, RATELIMIT_CONFIG
from tests.kits import jwt_kit
from tollgate.http_server import HttpRequest
from tollgate.reload import ConfigHolder

ROOT = Path(__file__).resolve().parent.parent



CONFIG = """
identities:
  - name: idp
    jwt: {{issuer: {issuer}, audiences: [{audience}], jwks_file: {jwks}, algorithms: [EdDSA]}}
routes:
  - name: orders-read
    match: {{methods: [GET], path: {{template: "/orders/{{id}}"}}}}
    require: {{scopes: {{all_of: ["orders:read"]}}}}
"""



def main() -> None:
    count = int(sys.argv[1])
    forwarded = sys.argv[3] if len(sys.argv) > 3 and sys.argv[2] == "--forwarded" else ""
    limited = "--limit" in sys.argv[2:]
    # A fixed Ed25519 key: no key generation, deterministic signatures, the same count
    # of instructions on every run.
    key = jwt_kit.SigningKey("bench-1", "EdDSA", Ed25519PrivateKey.from_private_bytes(
        bytes(range(32))))
    with tempfile.TemporaryDirectory() as tmp:
        jwks = Path(tmp) / "jwks.json"
        jwks.write_text(json.dumps(jwt_kit.jwks(key)))
        config = Path(tmp) / "authz.yaml"
        text = CONFIG.format(issuer=jwt_kit.ISSUER, audience=jwt_kit.AUDIENCE, jwks=jwks)
        if limited:
            rules = Path(tmp) / "rules.yaml"
            rules.write_text(RATELIMIT_CONFIG)
            text += AUTHZ_LIMITS.format(rules=rules)
        config.write_text(text)
        keys = KeyRegistry()
        pipeline = Pipeline(ConfigHolder(load_policy(config, keys)), keys)
    headers = [("host", "api.test"), ("authorization", "Bearer " + jwt_kit.mint(key)),
               ("x-request-id", "rid-1"), ("x-tollgate-attr-source-address", "10.0.0.1")]
    target, peer = "/check/orders/1", ""
    door = HttpCheckDoor(pipeline)
    if forwarded:
        from authz_service.doors.forwarded import (  # noqa: PLC0415
            CONVENTIONS,
            Forwarding,
            TrustedForwarders,
        )

        door = HttpCheckDoor(pipeline, forwarding=Forwarding(
            CONVENTIONS[forwarded], TrustedForwarders.parse("127.0.0.1/32")))
        target, peer = "/check", "127.0.0.1"
        headers += [("x-original-method", "GET"), ("x-original-uri", "/orders/1"),
                    ("x-forwarded-for", "10.0.0.1")]

    async def run() -> None:
        request = HttpRequest("GET", target, headers, b"", peer, True)
        first = door(request)
        if not isinstance(first, bytes):
            await first  # the first check verifies the token; the rest find it cached
        answer = door(request)
        if not isinstance(answer, bytes):  # a limit stage awaits its count
            answer = await answer
        if not answer.startswith(b"HTTP/1.1 200"):
            raise SystemExit(f"not a cached allow: {answer!r}")
        for _ in range(count):
            answer = door(request)
            if not isinstance(answer, bytes):
                await answer

    asyncio.run(run())


if __name__ == "__main__":
    main()
