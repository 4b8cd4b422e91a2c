"""Instructions per decision, counted by callgrind (deterministic, unlike timings).

    valgrind --tool=callgrind --callgrind-out-file=/dev/null \
        .venv/bin/python -m bench.decision_callgrind --case bearer-cached --count N

Run it with --count 0 and --count N and divide the difference of the two "Collected"
totals by N: what remains is one pipeline decision (door parsing excluded), everything
before the loop (imports, compiling the policy, the first verification) cancelling out.
Cases: `bearer-cached` (the hot path: a cached ES256 bearer token, no limits),
`dpop` (a cached DPoP-bound token with a fresh ES256 proof each time: proof
verification and the in-memory replay store). Proofs are minted before the counted
part starts, --pool of them whatever --count says, so minting cancels too.
`TOLLGATE_ROOT=/path/to/other/checkout` measures that checkout's code instead.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from authz_service.config import AuthzConfig
from authz_service.identity.jwt import JwtSource, KeyProvider
from authz_service.keys.keyset import KeySet, parse_jwks
from authz_service.keys.registry import KeyRegistry
from authz_service.models import RequestContext
from authz_service.pipeline import Pipeline
from authz_service.policy.compiled import compile_config
from tests.kits import jwt_kit
from tollgate.reload import ConfigHolder

# TOLLGATE_ROOT: another checkout to measure (e.g. `git archive` of main in /tmp).
ROOT = Path(os.environ.get("TOLLGATE_ROOT") or Path(__file__).resolve().parent.parent)


NOW = 1_700_000_000.0
URL = "https://api.test/orders/1"


class StaticKeys:
    generation = 1

    def __init__(self, keys: KeySet) -> None:
        self.key_set = keys


def pipeline(dpop: bool) -> Pipeline:
    settings: dict[str, Any] = {"issuer": jwt_kit.ISSUER, "jwks_file": "unused.json",
                                "algorithms": ["ES256"]}
    if dpop:
        settings["dpop"] = "allow"
    config = AuthzConfig.model_validate({
        "identities": [{"name": "idp", "jwt": settings}],
        "routes": [{"name": "orders", "match": {"path": {"prefix": "/orders"}},
                    "require": {"scopes": {"all_of": ["orders:read"]}}}],
    })
    keys = parse_jwks(json.dumps(jwt_kit.jwks(ISSUER_KEY)))

    def factory(name: str, source: JwtSource) -> KeyProvider:
        return StaticKeys(keys)

    return Pipeline(ConfigHolder(compile_config(config, factory)), KeyRegistry(),
                    clock=lambda: NOW)


# EC, not RSA: generating an RSA key costs a random number of instructions (the prime
# search), which would not cancel between the two runs.
ISSUER_KEY = jwt_kit.ec_key("ec-1")


def run_once(decide_pipeline: Pipeline, ctx: RequestContext) -> None:
    coro = decide_pipeline.decide(ctx)
    try:
        coro.send(None)
    except StopIteration:
        return
    raise SystemExit("the decision suspended: this bench needs one that does not")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--case", choices=["bearer-cached", "dpop"], default="bearer-cached")
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--pool", type=int, default=1000, help="dpop: proofs minted")
    args = parser.parse_args()
    dpop = args.case == "dpop"
    service = pipeline(dpop)
    contexts: list[RequestContext]
    if dpop:
        from tests.kits import dpop_kit  # noqa: PLC0415

        proof_key = jwt_kit.ec_key("proof")
        access = jwt_kit.mint(ISSUER_KEY, iat=NOW, nbf=NOW, exp=NOW + 600,
                              cnf={"jkt": dpop_kit.thumbprint(dpop_kit.proof_jwk(proof_key))})
        contexts = [RequestContext("GET", "/orders/1", "api.test", headers={
            "authorization": f"DPoP {access}",
            "dpop": dpop_kit.proof(proof_key, "GET", URL, access, iat=NOW)})
            for _ in range(max(args.pool, args.count) + 1)][: args.count + 1]
    else:
        access = jwt_kit.mint(ISSUER_KEY, iat=NOW, nbf=NOW, exp=NOW + 600)
        one = RequestContext("GET", "/orders/1", "api.test",
                             headers={"authorization": f"Bearer {access}"})
        contexts = [one] * (args.count + 1)
    run_once(service, contexts[0])  # verify once: the token is cached from here
    for ctx in contexts[1:]:
        run_once(service, ctx)
    return 0


if __name__ == "__main__":
    sys.exit(main())
