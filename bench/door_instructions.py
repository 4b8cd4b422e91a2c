"""Instructions per cached-token check through the HTTP door, counted by callgrind.

Deterministic (no timing): the door answers N checks of one cached token in-process
(the request object as the HTTP server hands it over, no socket), and callgrind counts
the instructions; the difference between 15000 and 5000 checks, divided by 10000, is
the cost of one check. Run it on two checkouts to compare a change:

    PYTHONHASHSEED=0 valgrind --tool=callgrind --callgrind-out-file=/dev/null \
        .venv/bin/python -m bench.door_instructions 15000 2>&1 | grep refs
    (and again with 5000; the script prints nothing itself)
"""

from __future__ import annotations

import asyncio
import gc
import json
import sys
import tempfile
from pathlib import Path

from authz_service.doors.http import HttpCheckDoor
from authz_service.keys.registry import KeyRegistry
from authz_service.limits.stage import LimitCounter
from authz_service.pipeline import Pipeline
from authz_service.policy.loading import load_policy
from ratelimit_service.stores.memory import MemoryStore
from tests.kits import jwt_kit
from tollgate.http_server import HttpRequest
from tollgate.reload import ConfigHolder

ROOT = Path(__file__).resolve().parent.parent


POLICY = """realm: bench
token_cache: {{max_entries: 1000}}
identities:
  - name: idp
    jwt: {{issuer: {issuer}, audiences: [{audience}], jwks_file: {jwks}, algorithms: [ES256]}}
routes:
  - name: orders
    match: {{path: {{prefix: /orders}}}}
    identities: [idp]
    require: {{scopes: {{all_of: ["orders:read"]}}}}
"""


async def main(checks: int) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="door-bench-"))
    # An EC key: generating an RSA one costs a random number of instructions (the prime
    # search), which would swamp the difference between two runs.
    key = jwt_kit.ec_key("bench")
    (workdir / "jwks.json").write_text(json.dumps(jwt_kit.jwks(key)))
    config = workdir / "authz.yaml"
    config.write_text(POLICY.format(issuer=jwt_kit.ISSUER, audience=jwt_kit.AUDIENCE,
                                    jwks=workdir / "jwks.json"))
    keys = KeyRegistry()
    holder = ConfigHolder(load_policy(config, keys))
    door = HttpCheckDoor(Pipeline(holder, keys, LimitCounter(MemoryStore())))
    token = jwt_kit.mint(key)
    request = HttpRequest("GET", "/check/orders/1", [
        ("host", "api.test"), ("authorization", f"Bearer {token}"),
        ("x-tollgate-attr-source-address", "10.0.0.1")], b"", "", True)
    first = door(request)
    assert isinstance(first, bytes) and first.startswith(b"HTTP/1.1 200"), first
    # The setup's objects out of the collector's walks: what is counted is the check.
    gc.collect()
    gc.freeze()
    for _ in range(checks):
        door(request)


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 20000))
