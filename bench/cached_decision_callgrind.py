"""Instructions per cached-token decision through the pipeline, counted by callgrind.

Callgrind counts are deterministic, so two trees can be compared exactly. The cost of
one decision is the difference between a run of N decisions and a run of none (start-
up, imports and the config load cancel out), divided by N:

    valgrind --tool=callgrind --callgrind-out-file=/dev/null \
        .venv/bin/python -m bench.cached_decision_callgrind 0
    valgrind --tool=callgrind --callgrind-out-file=/dev/null \
        .venv/bin/python -m bench.cached_decision_callgrind 20000

(read `Collected` from each run's summary on stderr; PYTHONHASHSEED=0 for repeatable
runs). Two cases per run, chosen with
--case: `jwt` (a cached JWT, the common path) and `introspection` (a cached opaque token).
The pipeline is driven the way the HTTP door drives it (tollgate.eager.start): no
event loop turn, no task, since nothing waits.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

from authz_service.identity.token_cache import TokenCache
from authz_service.keys.registry import KeyRegistry
from authz_service.models import RequestContext
from authz_service.pipeline import Pipeline
from authz_service.policy.loading import load_policy
from tests.kits import jwt_kit
from tollgate.eager import start
from tollgate.reload import ConfigHolder

ROOT = Path(__file__).resolve().parent.parent


JWT = """
identities:
  - name: idp
    jwt: {{issuer: {issuer}, audiences: [{audience}], jwks_file: {jwks}, algorithms: [ES256]}}
routes:
  - name: orders-read
    match: {{methods: [GET], path: {{template: "/orders/{{id}}"}}}}
    require: {{scopes: {{all_of: ["orders:read"]}}}}
"""

INTROSPECTION = """
identities:
  - name: opaque
    introspection:
      endpoint: http://127.0.0.1:9/introspect
      client: {{method: client_secret_post, client_id: bench, client_secret_file: {secret}}}
routes:
  - name: orders-read
    match: {{methods: [GET], path: {{template: "/orders/{{id}}"}}}}
    require: {{scopes: {{all_of: ["orders:read"]}}}}
"""


def pipeline_and_token(case: str, work: Path) -> tuple[Pipeline, str]:
    config = work / "authz.yaml"
    if case == "jwt":
        key = jwt_kit.ec_key("bench-ec")  # EC: key generation costs about the same each run
        (work / "jwks.json").write_text(json.dumps(jwt_kit.jwks(key)))
        config.write_text(JWT.format(issuer=jwt_kit.ISSUER, audience=jwt_kit.AUDIENCE,
                                     jwks=work / "jwks.json"))
        token = jwt_kit.mint(key, exp=int(time.time()) + 3600)
        return Pipeline(ConfigHolder(load_policy(config, KeyRegistry())), KeyRegistry()), token
    (work / "secret").write_text("bench-secret")
    config.write_text(INTROSPECTION.format(secret=work / "secret"))
    pipeline = Pipeline(ConfigHolder(load_policy(config, KeyRegistry())), KeyRegistry())
    source = pipeline.holder.current.sources["opaque"]
    # Cached as an endpoint's yes would be: the same code path the lookup records with.
    source._record(TokenCache.digest("opaque-bench-token"),  # type: ignore[attr-defined]
                   {"active": True, "sub": "alice", "scope": "orders:read",
                    "exp": int(time.time()) + 3600})
    return pipeline, "opaque-bench-token"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("count", type=int)
    parser.add_argument("--case", choices=["jwt", "introspection"], default="jwt")
    args = parser.parse_args()
    pipeline, token = pipeline_and_token(args.case, Path(tempfile.mkdtemp(prefix="tg-cg-")))
    ctx = RequestContext("GET", "/orders/1", headers={"authorization": f"Bearer {token}"})

    async def run() -> None:
        first = start(pipeline.decide(ctx))  # verifies and caches
        if isinstance(first, asyncio.Task):
            first = await first
        assert first.identity is not None, first.decision
        for _ in range(args.count):
            answer = start(pipeline.decide(ctx))
            if isinstance(answer, asyncio.Task):
                raise SystemExit("a cached decision suspended")

    asyncio.run(run())


if __name__ == "__main__":
    main()
