"""Policy evaluation cost: the CEL libraries that install, and the cached-token decision.

    .venv/bin/python -m bench.policy_bench [--rounds 20000]

Part 1 times one CEL condition over a request and an identity in each candidate
library that imports (common-expression-language `cel`, cel-expr-python,
cel-python `celpy`): compile once, then per evaluation the cost of handing the
library the request document and evaluating. Part 2 times the pure `decide()` for a
cached token on a route without CEL, with a requirement tree, and with a CEL
condition through Tollgate's own compiled condition. Prints Markdown tables
(µs of CPU per evaluation, best of 5 runs).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from authz_service.keys.registry import KeyRegistry
from authz_service.models import Allow, RequestContext
from authz_service.policy.engine import decide
from authz_service.policy.loading import load_policy
from tests.kits import jwt_kit

ROOT = Path(__file__).resolve().parent.parent


EXPRESSION = (
    'request.method == "POST" && request.path.startsWith("/orders/") '
    '&& "ops" in identity.roles && identity.claims.tenant == request.headers["x-tenant"]'
)
REQUEST = {
    "method": "POST",
    "path": "/orders/42",
    "host": "api.example.com",
    "headers": {"x-tenant": "acme", "content-type": "application/json",
                "user-agent": "bench/1"},
    "query": "",
    "source_address": "10.1.2.3",
}
IDENTITY = {
    "subject": "alice",
    "scopes": ["orders:read", "orders:write"],
    "roles": ["ops", "viewer"],
    "claims": {"tenant": "acme", "realm_access": {"roles": ["ops"]}},
    "principal": "alice",
}


def best(fn: Callable[[], object], rounds: int) -> float:
    """Best of 5 runs, µs of this process's CPU per call (CPU time, not wall time: on a
    shared machine the wall clock also counts the time other processes ran)."""
    times = []
    for _ in range(5):
        start = time.process_time()
        for _ in range(rounds):
            fn()
        times.append((time.process_time() - start) / rounds * 1e6)
    return min(times)


def candidates() -> dict[str, Callable[[], Callable[[], object]]]:
    """library -> a builder returning the per-evaluation call (compile outside it)."""

    def common_expression_language() -> Callable[[], object]:
        import cel  # noqa: PLC0415 (a candidate may not install)

        program = cel.compile(EXPRESSION)
        return lambda: program.execute({"request": REQUEST, "identity": IDENTITY})

    def cel_expr_python() -> Callable[[], object]:
        from cel_expr_python import cel as gcel  # noqa: PLC0415 (a candidate may not install)

        env = gcel.NewEnv(variables={"request": gcel.Type.DYN, "identity": gcel.Type.DYN})
        expr = env.compile(EXPRESSION)
        return lambda: expr.eval(data={"request": REQUEST, "identity": IDENTITY}).value()

    def cel_python() -> Callable[[], object]:
        import celpy  # noqa: PLC0415 (a candidate may not install)

        env = celpy.Environment()
        program = env.program(env.compile(EXPRESSION))
        return lambda: program.evaluate(
            {"request": celpy.json_to_cel(REQUEST), "identity": celpy.json_to_cel(IDENTITY)})

    return {
        "common-expression-language (Rust, `cel`)": common_expression_language,
        "cel-expr-python (C++ cel-cpp, `cel_expr_python`)": cel_expr_python,
        "cel-python (pure Python, `celpy`)": cel_python,
    }


def library_table(rounds: int) -> list[str]:
    lines = ["| library | result | µs per evaluation |", "|---|---|---:|"]
    for name, build in candidates().items():
        try:
            call = build()
            result = call()
        except Exception as exc:  # a candidate that does not install or run
            lines.append(f"| {name} | not usable: {type(exc).__name__}: {exc} | - |")
            continue
        slow = "cel-python" in name
        lines.append(f"| {name} | {result} | {best(call, rounds // 20 if slow else rounds):.2f} |")
    return lines


POLICY = """
identities:
  - name: idp
    jwt:
      issuer: {issuer}
      audiences: [{audience}]
      jwks_file: {jwks}
      algorithms: [RS256]
      roles_claim: realm_access.roles
routes:
  - name: flat
    match: {{path: {{prefix: /flat/}}}}
    require: {{scopes: {{all_of: ["orders:read"]}}}}
  - name: tree
    match: {{path: {{prefix: /tree/}}}}
    require:
      any_of:
        - {{scopes: {{all_of: [admin]}}}}
        - {{roles: {{any_of: [ops]}}, claims: {{tenant: acme}}}}
  - name: cel
    match: {{path: {{prefix: /cel/}}}}
    require:
      scopes: {{all_of: ["orders:read"]}}
      cel: 'request.method == "GET" && "ops" in identity.roles'
"""


def decision_table(rounds: int) -> list[str]:
    key = jwt_kit.rsa_key("bench")
    with tempfile.TemporaryDirectory() as tmp:
        jwks = Path(tmp, "jwks.json")
        jwks.write_text(json.dumps(jwt_kit.jwks(key)))
        config = Path(tmp, "authz.yaml")
        config.write_text(POLICY.format(issuer=jwt_kit.ISSUER, audience=jwt_kit.AUDIENCE,
                                        jwks=jwks))
        policy = load_policy(config, KeyRegistry())
    now = time.time()
    token = jwt_kit.mint(key, scope="orders:read", tenant="acme",
                         realm_access={"roles": ["ops"]})
    lines = ["| route | µs per decide() (cached token) |", "|---|---:|"]
    for name in ("flat", "tree", "cel"):
        ctx = RequestContext(method="GET", path=f"/{name}/1", host="api.example.com",
                             headers={"authorization": f"Bearer {token}"},
                             source_address="10.1.2.3")
        first = decide(policy, ctx, now)
        if not isinstance(first, Allow):
            raise SystemExit(f"{name}: expected an allow, got {first}")
        lines.append(f"| {name} | {best(lambda c=ctx: decide(policy, c, now), rounds):.2f} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=20000)
    args = parser.parse_args()
    print(f"CEL condition: `{EXPRESSION}`\n")
    print("\n".join(library_table(args.rounds)))
    print()
    print("\n".join(decision_table(args.rounds)))


if __name__ == "__main__":
    main()
