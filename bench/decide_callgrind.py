"""The cached-token decision's instruction count, for `valgrind --tool=callgrind`.

    valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.%p \
        .venv/bin/python bench/decide_callgrind.py ROUTE ITERATIONS

Loads a policy, decides once (the token is verified and cached), then decides
ITERATIONS more times for the same request on ROUTE (`flat`: one scope, as every
existing config; `tree`: an any_of; `address`: a CIDR allow list). Run it with 0 and
with N iterations: (Ir(N) - Ir(0)) / N is the instructions per decision, the same on
every run (no timing noise). It uses only the config format every version reads for
`flat`, so the same script measures an older checkout (PYTHONPATH=that checkout).
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(1, str(ROOT))

from authz_service.keys.registry import KeyRegistry  # noqa: E402
from authz_service.models import Allow, RequestContext  # noqa: E402
from authz_service.policy.engine import decide  # noqa: E402
from authz_service.policy.loading import load_policy  # noqa: E402
from tests.authz import jwt_kit  # noqa: E402

ROUTES = {
    "flat": 'require: {scopes: {all_of: ["orders:read"]}}',
    "tree": 'require: {any_of: [{scopes: {all_of: [admin]}}, {scopes: {all_of: ["orders:read"]}}]}',
    "address": 'address: {allow: [10.0.0.0/8]}',
}


def main() -> None:
    route, iterations = sys.argv[1], int(sys.argv[2])
    key = jwt_kit.rsa_key("cg")
    with tempfile.TemporaryDirectory() as tmp:
        jwks = Path(tmp, "jwks.json")
        jwks.write_text(json.dumps(jwt_kit.jwks(key)))
        config = Path(tmp, "authz.yaml")
        config.write_text(
            "identities:\n  - name: idp\n    jwt:\n"
            f"      issuer: {jwt_kit.ISSUER}\n      audiences: [{jwt_kit.AUDIENCE}]\n"
            f"      jwks_file: {jwks}\nroutes:\n  - name: r\n"
            f"    match: {{path: {{prefix: /orders/}}}}\n    {ROUTES[route]}\n"
        )
        policy = load_policy(config, KeyRegistry())
    now = time.time()
    ctx = RequestContext(method="GET", path="/orders/1", host="api.example.com",
                         headers={"authorization": f"Bearer {jwt_kit.mint(key)}"},
                         source_address="10.1.2.3")
    if not isinstance(decide(policy, ctx, now), Allow):
        raise SystemExit("expected an allow")
    for _ in range(iterations):
        decide(policy, ctx, now)


if __name__ == "__main__":
    main()
