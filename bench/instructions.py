"""What one cached-token check costs, in instructions (callgrind) or in calls: one registry.

    .venv/bin/python -m bench.instructions --all                 # every case, a table
    .venv/bin/python -m bench.instructions door-jwt engine-flat  # some cases
    .venv/bin/python -m bench.instructions --calls --all         # function calls instead
    .venv/bin/python -m bench.instructions --list                # the cases

Instructions. Wall-clock figures are noise on a shared machine; callgrind's count is
not. For each case the bench runs itself twice under `valgrind --tool=callgrind
--callgrind-out-file=/dev/null` with PYTHONHASHSEED=0, once for a small and once for a
larger number of checks (`--counts SMALL LARGE`, 200 and 1200 unless the case says
otherwise), reads each run's "Collected" total from valgrind's stderr and prints
(Ir(LARGE) - Ir(SMALL)) / (LARGE - SMALL): start-up, imports, the policy load and the
first (verifying) check cancel out. Anything a case needs a fresh one of per check (a
DPoP proof, an unseen token) is made before the counted part, the same number of them
in both runs, so making them cancels too. Key generation must cancel as well: the
cases use EC, Ed25519 or HS256 keys, never RSA (the prime search costs a random number
of instructions). The setup's objects are frozen out of the collector's walks
(gc.freeze), so what is counted is the check and not the size of the heap.

Calls (`--calls`). The Python and C function calls one check makes, counted with
sys.setprofile in this process (no valgrind): exact, and they say *where* a change
added work when the instruction count says only how much. Counting starts at the case's
check callable, so the lambda most cases wrap their call in is one of the Python calls
(engine-flat, -tree and -address call decide() directly); door-limit-memory's count
includes its wait for the counter.

Comparing two trees. `--tree DIR` (or TOLLGATE_ROOT=DIR) measures another checkout's
code with this file's cases: the runs put DIR first on PYTHONPATH, so its
authz_service, ratelimit_service, tollgate, tests.kits and bench come first, this
tree's after. E.g. main before a change:

    git -C /work/main archive --prefix=base/ main | tar -x -C /tmp
    .venv/bin/python -m bench.instructions --tree /tmp/base --all   # the base
    .venv/bin/python -m bench.instructions --all                    # this tree

(A case that needs something the other tree lacks, e.g. DPoP, fails there, and its
row says so.)

The cases, by level (`--list` prints them with what they measure):
- door-*: `HttpCheckDoor.__call__` in process (parse the request the HTTP server hands
  over, decide, render the allow; no socket, no Envoy). door-jwt: a cached EdDSA JWT;
  door-nginx: the same behind `--http-forwarded nginx`; door-limit-memory: plus one
  per-subject rate limit on in-memory counters, the limit bench/envoy_bench.py's
  http_authz_limit_memory case decides.
- pipeline-*: `Pipeline.decide` driven as the HTTP door drives it (tollgate.eager.start:
  no event-loop turn, no task, since nothing waits). pipeline-jwt: a cached ES256 JWT;
  pipeline-introspection: a cached opaque token; pipeline-dpop: a cached DPoP-bound
  token with a fresh ES256 proof each check (proof verification, the in-memory replay
  store).
- engine-*: `policy.engine.decide` alone, an HS256 issuer. engine-flat: one scope, as
  every config; engine-tree: an any_of whose first branch fails; engine-address: a CIDR
  allow list; engine-uncached: a token never seen before each check (the signature
  check, then the cache's insert).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

Check = Callable[[], Any]  # one check (an awaits case's: None, or an awaitable to wait for)


@dataclass(frozen=True)
class Case:
    what: str
    # setup(pool): build what the check needs, check once (verify, cache), assert the
    # answer, and return the zero-argument callable that performs one more check.
    # pool: how many checks the largest run makes (for what must be fresh per check).
    setup: Callable[[int], Coroutine[Any, Any, Check]]
    counts: tuple[int, int] = (200, 1200)
    awaits: bool = False  # the check returns None when done, else an awaitable to wait for


def workdir() -> Path:
    path = Path(tempfile.mkdtemp(prefix="tg-instructions-"))
    import atexit  # noqa: PLC0415

    atexit.register(shutil.rmtree, path, True)
    return path


# ---------------------------------------------------------------- the HTTP door

JWT_CONFIG = """
identities:
  - name: idp
    jwt: {{issuer: {issuer}, audiences: [{audience}], jwks_file: {jwks}, algorithms: [{alg}]}}
routes:
  - name: orders-read
    match: {{methods: [GET], path: {{template: "/orders/{{id}}"}}}}
    require: {{scopes: {{all_of: ["orders:read"]}}}}
"""


async def door(forwarded: str = "", limited: bool = False) -> Check:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (  # noqa: PLC0415
        Ed25519PrivateKey,
    )

    from authz_service.doors.http import HttpCheckDoor  # noqa: PLC0415
    from authz_service.keys.registry import KeyRegistry  # noqa: PLC0415
    from authz_service.pipeline import Pipeline  # noqa: PLC0415
    from authz_service.policy.loading import load_policy  # noqa: PLC0415
    from tests.kits import jwt_kit  # noqa: PLC0415
    from tollgate.http_server import HttpRequest  # noqa: PLC0415
    from tollgate.reload import ConfigHolder  # noqa: PLC0415

    # A fixed Ed25519 key: no key generation, deterministic signatures.
    key = jwt_kit.SigningKey("bench-1", "EdDSA", Ed25519PrivateKey.from_private_bytes(
        bytes(range(32))))
    work = workdir()
    (work / "jwks.json").write_text(json.dumps(jwt_kit.jwks(key)))
    text = JWT_CONFIG.format(issuer=jwt_kit.ISSUER, audience=jwt_kit.AUDIENCE,
                             jwks=work / "jwks.json", alg=key.alg)
    if limited:
        # The limit envoy_bench's http_authz_limit_memory case decides: one thing measured.
        from bench.envoy_bench import AUTHZ_LIMITS, RATELIMIT_CONFIG  # noqa: PLC0415

        (work / "rules.yaml").write_text(RATELIMIT_CONFIG)
        text += AUTHZ_LIMITS.format(rules=work / "rules.yaml")
    (work / "authz.yaml").write_text(text)
    keys = KeyRegistry()
    pipeline = Pipeline(ConfigHolder(load_policy(work / "authz.yaml", keys)), keys)
    headers = [("host", "api.test"), ("authorization", "Bearer " + jwt_kit.mint(key)),
               ("x-request-id", "rid-1"), ("x-tollgate-attr-source-address", "10.0.0.1")]
    target, peer = "/check/orders/1", ""
    check = HttpCheckDoor(pipeline)
    if forwarded:
        from authz_service.doors.forwarded import (  # noqa: PLC0415
            CONVENTIONS,
            Forwarding,
            TrustedForwarders,
        )

        check = HttpCheckDoor(pipeline, forwarding=Forwarding(
            CONVENTIONS[forwarded], TrustedForwarders.parse("127.0.0.1/32")))
        target, peer = "/check", "127.0.0.1"
        headers += [("x-original-method", "GET"), ("x-original-uri", "/orders/1"),
                    ("x-forwarded-for", "10.0.0.1")]
    request = HttpRequest("GET", target, headers, b"", peer, True)
    for _ in range(2):  # the first verifies the token; the second finds it cached
        answer = check(request)
        if not isinstance(answer, bytes):  # a limit stage awaits its count
            answer = await answer
    if not answer.startswith(b"HTTP/1.1 200"):
        raise SystemExit(f"not a cached allow: {answer!r}")
    if not limited:
        return lambda: check(request)

    def counted() -> Any:
        answer = check(request)
        return None if isinstance(answer, bytes) else answer

    return counted


# ---------------------------------------------------------------- the pipeline

PIPELINE_INTROSPECTION = """
identities:
  - name: opaque
    introspection:
      endpoint: http://127.0.0.1:9/introspect
      client: {{method: client_secret_post, client_id: bench, client_secret_file: {secret}}}
      audiences: any
routes:
  - name: orders-read
    match: {{methods: [GET], path: {{template: "/orders/{{id}}"}}}}
    require: {{scopes: {{all_of: ["orders:read"]}}}}
"""


def eager(pipeline: Any, contexts: list[Any]) -> Check:
    """Decide contexts[0] (verify, cache), then return a check of the next context each
    call (the last one again once they run out), as the HTTP door drives the pipeline."""
    from tollgate.eager import start  # noqa: PLC0415

    first = start(pipeline.decide(contexts[0]))
    if isinstance(first, asyncio.Task) or first.identity is None:
        raise SystemExit(f"the first decision did not allow without waiting: {first!r}")
    if len(contexts) == 1:
        ctx = contexts[0]
        if isinstance(start(pipeline.decide(ctx)), asyncio.Task):
            raise SystemExit("a cached decision suspended")
        return lambda: start(pipeline.decide(ctx))
    rest = iter(contexts[1:])
    return lambda: start(pipeline.decide(next(rest)))


async def pipeline_jwt(pool: int) -> Check:
    from authz_service.keys.registry import KeyRegistry  # noqa: PLC0415
    from authz_service.models import RequestContext  # noqa: PLC0415
    from authz_service.pipeline import Pipeline  # noqa: PLC0415
    from authz_service.policy.loading import load_policy  # noqa: PLC0415
    from tests.kits import jwt_kit  # noqa: PLC0415
    from tollgate.reload import ConfigHolder  # noqa: PLC0415

    work = workdir()
    key = jwt_kit.ec_key("bench-ec")
    (work / "jwks.json").write_text(json.dumps(jwt_kit.jwks(key)))
    (work / "authz.yaml").write_text(JWT_CONFIG.format(
        issuer=jwt_kit.ISSUER, audience=jwt_kit.AUDIENCE, jwks=work / "jwks.json",
        alg=key.alg))
    pipeline = Pipeline(ConfigHolder(load_policy(work / "authz.yaml", KeyRegistry())),
                        KeyRegistry())
    token = jwt_kit.mint(key, exp=int(time.time()) + 3600)
    return eager(pipeline, [RequestContext(
        "GET", "/orders/1", headers={"authorization": f"Bearer {token}"})])


async def pipeline_introspection(pool: int) -> Check:
    from authz_service.identity.token_cache import TokenCache  # noqa: PLC0415
    from authz_service.keys.registry import KeyRegistry  # noqa: PLC0415
    from authz_service.models import RequestContext  # noqa: PLC0415
    from authz_service.pipeline import Pipeline  # noqa: PLC0415
    from authz_service.policy.loading import load_policy  # noqa: PLC0415
    from tollgate.reload import ConfigHolder  # noqa: PLC0415

    work = workdir()
    (work / "secret").write_text("bench-secret")
    (work / "authz.yaml").write_text(PIPELINE_INTROSPECTION.format(secret=work / "secret"))
    pipeline = Pipeline(ConfigHolder(load_policy(work / "authz.yaml", KeyRegistry())),
                        KeyRegistry())
    source = pipeline.holder.current.sources["opaque"]
    # Cached as an endpoint's yes would be: the same code path the lookup records with.
    source._record(TokenCache.digest("opaque-bench-token"),
                   {"active": True, "sub": "alice", "scope": "orders:read",
                    "exp": int(time.time()) + 3600})
    return eager(pipeline, [RequestContext(
        "GET", "/orders/1", headers={"authorization": "Bearer opaque-bench-token"})])


DPOP_NOW = 1_700_000_000.0  # a fixed clock: the proofs are minted for it
DPOP_URL = "https://api.test/orders/1"


async def pipeline_dpop(pool: int) -> Check:
    from authz_service.config import AuthzConfig  # noqa: PLC0415
    from authz_service.keys.keyset import parse_jwks  # noqa: PLC0415
    from authz_service.keys.registry import KeyRegistry  # noqa: PLC0415
    from authz_service.models import RequestContext  # noqa: PLC0415
    from authz_service.pipeline import Pipeline  # noqa: PLC0415
    from authz_service.policy.compiled import compile_config  # noqa: PLC0415
    from tests.kits import dpop_kit, jwt_kit  # noqa: PLC0415
    from tollgate.reload import ConfigHolder  # noqa: PLC0415

    issuer = jwt_kit.ec_key("ec-1")
    keys = StaticKeys(parse_jwks(json.dumps(jwt_kit.jwks(issuer))))
    config = AuthzConfig.model_validate({
        "identities": [{"name": "idp", "jwt": {"issuer": jwt_kit.ISSUER,
                                                "audiences": [jwt_kit.AUDIENCE],
                                                "jwks_file": "unused.json",
                                                "algorithms": ["ES256"], "dpop": "allow"}}],
        "routes": [{"name": "orders", "match": {"path": {"prefix": "/orders"}},
                    "require": {"scopes": {"all_of": ["orders:read"]}}}],
    })
    pipeline = Pipeline(ConfigHolder(compile_config(config, lambda name, source: keys)),
                        KeyRegistry(), clock=lambda: DPOP_NOW)
    proof_key = jwt_kit.ec_key("proof")
    access = jwt_kit.mint(issuer, iat=DPOP_NOW, nbf=DPOP_NOW, exp=DPOP_NOW + 600,
                          cnf={"jkt": dpop_kit.thumbprint(dpop_kit.proof_jwk(proof_key))})
    return eager(pipeline, [RequestContext("GET", "/orders/1", "api.test", headers={
        "authorization": f"DPoP {access}",
        "dpop": dpop_kit.proof(proof_key, "GET", DPOP_URL, access, iat=DPOP_NOW)})
        for _ in range(pool + 1)])


class StaticKeys:
    """A key provider that holds one fixed key set (no JWKS file, no fetch)."""

    generation = 1

    def __init__(self, key_set: Any) -> None:
        self.key_set = key_set


# ---------------------------------------------------------------- the policy engine

ENGINE_SECRET = "bench-secret-0123456789abcdef0123456789"  # noqa: S105 (a bench's own)

ENGINE_ROUTES = {
    "flat": 'require: {scopes: {all_of: ["orders:read"]}}',
    "tree": 'require: {any_of: [{scopes: {all_of: [admin]}}, {scopes: {all_of: ["orders:read"]}}]}',
    "address": "address: {allow: [10.0.0.0/8]}",
}


async def engine(route: str, pool: int = 0) -> Check:
    """The engine's decide() for one route; pool > 0: a token never seen each check."""
    import functools  # noqa: PLC0415

    import jwt  # noqa: PLC0415

    from authz_service.keys.registry import KeyRegistry  # noqa: PLC0415
    from authz_service.models import Allow, RequestContext  # noqa: PLC0415
    from authz_service.policy.engine import decide  # noqa: PLC0415
    from authz_service.policy.loading import load_policy  # noqa: PLC0415
    from tests.kits import jwt_kit  # noqa: PLC0415

    os.environ["BENCH_JWT_SECRET"] = ENGINE_SECRET
    config = workdir() / "authz.yaml"
    config.write_text(
        "identities:\n  - name: idp\n    jwt:\n"
        f"      issuer: {jwt_kit.ISSUER}\n      audiences: [{jwt_kit.AUDIENCE}]\n"
        "      algorithms: [HS256]\n      shared_secret_env: BENCH_JWT_SECRET\n"
        "routes:\n  - name: r\n"
        f"    match: {{path: {{prefix: /orders/}}}}\n    {ENGINE_ROUTES[route]}\n"
    )
    policy = load_policy(config, KeyRegistry())
    now = float(int(time.time()))

    def context(sub: str) -> RequestContext:
        token = jwt.encode(jwt_kit.claims(sub=sub), ENGINE_SECRET, algorithm="HS256")
        return RequestContext(method="GET", path="/orders/1", host="api.example.com",
                              headers={"authorization": f"Bearer {token}"},
                              source_address="10.1.2.3")

    # Subjects of one length, so every fresh token is as long as the next.
    contexts = [context(f"user-{i:08d}") for i in range(pool + 1)]
    for ctx in contexts[:1] if pool else contexts * 2:
        if not isinstance(decide(policy, ctx, now), Allow):
            raise SystemExit(f"expected an allow on the {route} route")
    if not pool:
        return functools.partial(decide, policy, contexts[0], now)
    rest = iter(contexts[1:])
    return lambda: decide(policy, next(rest), now)


CASES: dict[str, Case] = {
    "door-jwt": Case("HTTP door, a cached EdDSA JWT (Envoy mode)", lambda pool: door()),
    "door-nginx": Case("HTTP door, the same behind --http-forwarded nginx",
                       lambda pool: door(forwarded="nginx")),
    "door-limit-memory": Case("HTTP door, cached JWT + one per-subject limit, memory store",
                              lambda pool: door(limited=True), awaits=True),
    "pipeline-jwt": Case("pipeline, a cached ES256 JWT", pipeline_jwt),
    "pipeline-introspection": Case("pipeline, a cached opaque (introspected) token",
                                   pipeline_introspection),
    "pipeline-dpop": Case("pipeline, a cached DPoP-bound JWT + a fresh ES256 proof",
                          pipeline_dpop, counts=(20, 220)),
    "engine-flat": Case("engine decide(), cached HS256 JWT, one scope",
                        lambda pool: engine("flat")),
    "engine-tree": Case("engine decide(), cached HS256 JWT, an any_of (first fails)",
                        lambda pool: engine("tree")),
    "engine-address": Case("engine decide(), cached HS256 JWT, a CIDR allow list",
                           lambda pool: engine("address")),
    "engine-uncached": Case("engine decide(), an HS256 JWT never seen before",
                            lambda pool: engine("flat", pool)),
}


# ---------------------------------------------------------------- running a case

def inner(name: str, count: int, pool: int) -> None:
    """The process valgrind counts: set the case up, then check `count` times."""
    case = CASES[name]

    async def run() -> None:
        check = await case.setup(pool)
        gc.collect()
        gc.freeze()
        if case.awaits:
            for _ in range(count):
                pending = check()
                if pending is not None:
                    await pending
        else:
            for _ in range(count):
                check()

    asyncio.run(run())


def collected(name: str, count: int, pool: int, tree: str | None) -> int:
    """Instructions of one `inner` run under callgrind ("Collected" on its stderr)."""
    path = [tree or "", os.environ.get("PYTHONPATH", ""), str(ROOT)]
    env = dict(os.environ, PYTHONHASHSEED="0", PYTHONPATH=os.pathsep.join(p for p in path if p))
    # Run by path, not -m: -m puts the working directory ahead of PYTHONPATH's tree.
    done = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
         sys.executable, str(Path(__file__).resolve()), "--inner", name, str(count),
         str(pool)], env=env, cwd=ROOT, capture_output=True, text=True, check=False)
    found = re.search(r"Collected\s*:\s*(\d+)", done.stderr)
    if done.returncode != 0 or not found:
        tail = "\n".join(done.stderr.strip().splitlines()[-8:])
        raise RuntimeError(f"{name} (N={count}) failed, exit {done.returncode}:\n{tail}")
    return int(found.group(1))


def per_check(name: str, counts: tuple[int, int] | None, tree: str | None) -> str:
    small, large = counts or CASES[name].counts
    try:
        low, high = (collected(name, n, large, tree) for n in (small, large))
    except RuntimeError as failed:
        print(failed, file=sys.stderr)
        return f"| {name} | failed (see above) | | | |"
    return (f"| {name} | {CASES[name].what} | {low:,} | {high:,} | "
            f"**{round((high - low) / (large - small)):,}** |")


def instructions(names: list[str], counts: tuple[int, int] | None, tree: str | None,
                 jobs: int) -> int:
    if shutil.which("valgrind") is None:
        print("valgrind is not installed, and the instruction counts need it: "
              "`sudo apt-get install valgrind` (Debian; ./scripts/bench installs it), or count "
              "calls instead "
              "(--calls, no valgrind).", file=sys.stderr)
        return 2
    print(f"tree: {tree or ROOT}; PYTHONHASHSEED=0; per check = (Ir(large N) - Ir(small N))"
          " / (large N - small N)\n", flush=True)
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        rows = list(pool.map(lambda name: per_check(name, counts, tree), names))
    print("| case | what | Ir, small N | Ir, large N | instructions per check |")
    print("|---|---|---:|---:|---:|")
    print("\n".join(rows))
    return 1 if any("failed" in row for row in rows) else 0


def calls(names: list[str]) -> int:
    """Python and C calls of one check of each case, counted with sys.setprofile."""
    print("| case | Python calls | C calls |")
    print("|---|---:|---:|")
    for name in names:
        counts = {"call": 0, "c_call": 0}

        def count(frame: FrameType, event: str, arg: object,
                  counts: dict[str, int] = counts) -> None:
            if event in counts:
                counts[event] += 1

        async def one(name: str = name, count: Callable[..., None] = count) -> None:
            check = await CASES[name].setup(1)
            sys.setprofile(count)
            answer = check()
            sys.setprofile(None)
            if CASES[name].awaits and answer is not None:  # a limit's count: its wait too
                sys.setprofile(count)
                await answer
                sys.setprofile(None)

        asyncio.run(one())
        print(f"| {name} | {counts['call']} | {counts['c_call']} |", flush=True)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.instructions", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("cases", nargs="*", metavar="CASE", help="cases to run (see --list)")
    parser.add_argument("--all", action="store_true", help="every case")
    parser.add_argument("--list", action="store_true", help="list the cases and exit")
    parser.add_argument("--calls", action="store_true",
                        help="count one check's Python and C calls instead (no valgrind)")
    parser.add_argument("--counts", nargs=2, type=int, metavar=("SMALL", "LARGE"),
                        help="checks in the two runs of every case (default: the case's)")
    parser.add_argument("--tree", default=os.environ.get("TOLLGATE_ROOT") or None,
                        help="another checkout to measure (default $TOLLGATE_ROOT, else this)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="valgrind runs at once (counts do not depend on it)")
    parser.add_argument("--inner", nargs=3, metavar=("CASE", "N", "POOL"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inner:
        inner(args.inner[0], int(args.inner[1]), int(args.inner[2]))
        return 0
    if args.list:
        for name, case in CASES.items():
            print(f"{name:24} {case.what} (N = {case.counts[0]}, {case.counts[1]})")
        return 0
    names = list(CASES) if args.all else args.cases
    unknown = [name for name in names if name not in CASES]
    if unknown:
        parser.error(f"unknown case(s): {', '.join(unknown)} (cases: {', '.join(CASES)})")
    if not names:
        parser.error(f"name a case or --all (cases: {', '.join(CASES)})")
    if args.counts and args.counts[1] <= args.counts[0]:
        parser.error("--counts SMALL LARGE: LARGE must be more than SMALL")
    if args.calls:
        if args.tree:
            parser.error("--calls counts this process's code: run it with PYTHONPATH=TREE")
        return calls(names)
    return instructions(names, tuple(args.counts) if args.counts else None, args.tree,
                        args.jobs)


if __name__ == "__main__":
    sys.exit(main())
