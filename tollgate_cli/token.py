"""`tollgate token`: mint a demo access token signed by the demo issuer's key."""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from pathlib import Path

import jwt

from tollgate_cli import demo_issuer


def mint(
    run_dir: Path,
    *,
    sub: str = "alice",
    scope: str = "orders:read",
    plan: str = "free",
    tenant: str = "demo",
    ttl: int = 300,
    now: float | None = None,
    cnf: dict[str, str] | None = None,
) -> str:
    """An RS256 at+jwt for the demo audience; FileNotFoundError if there is no key yet."""
    key = demo_issuer.load_key(run_dir)
    try:
        issuer = json.loads(demo_issuer.info_path(run_dir).read_text())["issuer"]
    except FileNotFoundError:
        issuer = demo_issuer.issuer_url()
    issued = int(now if now is not None else time.time())
    claims = {
        "iss": issuer, "aud": demo_issuer.AUDIENCE, "sub": sub, "scope": scope,
        "plan": plan, "tenant": tenant, "client_id": "tollgate-demo-cli",
        "iat": issued, "nbf": issued, "exp": issued + ttl, "jti": uuid.uuid4().hex,
    }
    if cnf:  # a sender-constrained token: bound to a certificate (x5t#S256) or a DPoP key (jkt)
        claims["cnf"] = cnf
    return jwt.encode(
        claims, key.private_key, algorithm="RS256", headers={"typ": "at+jwt", "kid": key.kid}
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sub", default="alice", help="subject (default alice)")
    parser.add_argument("--scope", default="orders:read", help='space-separated, e.g. "a b"')
    parser.add_argument("--plan", default="free", help="gold or free (rate-limit plan)")
    parser.add_argument("--tenant", default="demo")
    parser.add_argument("--ttl", type=int, default=300, help="seconds until exp")
    parser.add_argument("--run-dir", type=Path, default=Path("run"))


def run(args: argparse.Namespace) -> int:
    try:
        token = mint(args.run_dir, sub=args.sub, scope=args.scope, plan=args.plan,
                     tenant=args.tenant, ttl=args.ttl)
    except FileNotFoundError:
        print(f"tollgate token: no issuer key in {args.run_dir}/ yet; run `tollgate up` "
              f"(or pass --run-dir)", file=sys.stderr)
        return 1
    print(token)
    return 0
