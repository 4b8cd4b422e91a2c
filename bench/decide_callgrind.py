"""The cached-token decision's instruction count, for `valgrind --tool=callgrind`.

    PYTHONHASHSEED=0 valgrind --tool=callgrind --callgrind-out-file=/dev/null \
        .venv/bin/python -m bench.decide_callgrind ROUTE ITERATIONS

Loads a policy, decides once (the token is verified and cached), then decides
ITERATIONS more times for the same request on ROUTE (`flat`: one scope, as every
existing config; `tree`: an any_of; `address`: a CIDR allow list). Run it with 0 and
with N iterations: (Ir(N) - Ir(0)) / N is the instructions per decision, the same on
every run (no timing noise: an HS256 issuer, so no key is generated, and a fixed hash
seed). It uses only the config format every version reads for
`flat`, so the same script measures an older checkout (PYTHONPATH=that checkout).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import jwt

from authz_service.keys.registry import KeyRegistry
from authz_service.models import Allow, RequestContext
from authz_service.policy.engine import decide
from authz_service.policy.loading import load_policy
from tests.kits import jwt_kit

ROOT = Path(__file__).resolve().parent.parent


SECRET = "bench-secret-0123456789abcdef0123456789"  # noqa: S105 (a bench's own)

ROUTES = {
    "flat": 'require: {scopes: {all_of: ["orders:read"]}}',
    "tree": 'require: {any_of: [{scopes: {all_of: [admin]}}, {scopes: {all_of: ["orders:read"]}}]}',
    "address": 'address: {allow: [10.0.0.0/8]}',
}


def main() -> None:
    route, iterations = sys.argv[1], int(sys.argv[2])
    os.environ["BENCH_JWT_SECRET"] = SECRET
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp, "authz.yaml")
        config.write_text(
            "identities:\n  - name: idp\n    jwt:\n"
            f"      issuer: {jwt_kit.ISSUER}\n      audiences: [{jwt_kit.AUDIENCE}]\n"
            "      algorithms: [HS256]\n      shared_secret_env: BENCH_JWT_SECRET\n"
            "routes:\n  - name: r\n"
            f"    match: {{path: {{prefix: /orders/}}}}\n    {ROUTES[route]}\n"
        )
        policy = load_policy(config, KeyRegistry())
    now = float(int(time.time()))
    token = jwt.encode(jwt_kit.claims(), SECRET, algorithm="HS256")
    ctx = RequestContext(method="GET", path="/orders/1", host="api.example.com",
                         headers={"authorization": f"Bearer {token}"},
                         source_address="10.1.2.3")
    if not isinstance(decide(policy, ctx, now), Allow):
        raise SystemExit("expected an allow")
    for _ in range(iterations):
        decide(policy, ctx, now)


if __name__ == "__main__":
    main()
