"""`tollgate token`: mint a demo access token signed by the local stack's issuer key."""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from pathlib import Path

import jwt

from tollgate.demo_issuer import IssuerNotReadyError, SigningKey, load_signing_key

DEFAULT_RUN_DIR = "run/demo"


def mint(
    key: SigningKey,
    *,
    subject: str = "demo-user",
    scopes: str = "orders:read",
    plan: str = "free",
    tenant: str = "demo",
    ttl: int = 3600,
    client_id: str = "tollgate-cli",
    now: float | None = None,
) -> str:
    """An RFC 9068 style RS256 access token (typ `at+jwt`) for the demo audience."""
    issued = int(time.time() if now is None else now)
    claims = {
        "iss": key.issuer,
        "aud": key.audience,
        "sub": subject,
        "scope": scopes,
        "plan": plan,
        "tenant": tenant,
        "client_id": client_id,
        "iat": issued,
        "nbf": issued,
        "exp": issued + ttl,
        "jti": str(uuid.uuid4()),
    }
    return jwt.encode(claims, key.private_key, algorithm="RS256",
                      headers={"typ": "at+jwt", "kid": key.kid})


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `tollgate token`."""
    parser.add_argument("--run-dir", default=os.environ.get("TOLLGATE_RUN_DIR", DEFAULT_RUN_DIR),
                        help="run directory of `tollgate up` (env TOLLGATE_RUN_DIR; "
                             f"default {DEFAULT_RUN_DIR})")
    parser.add_argument("--sub", default="demo-user", help="subject (default demo-user)")
    parser.add_argument("--scope", default="orders:read",
                        help='space-separated scopes (default "orders:read")')
    parser.add_argument("--plan", default="free", choices=["free", "gold"], help="plan claim")
    parser.add_argument("--tenant", default="demo", help="tenant claim")
    parser.add_argument("--ttl", type=int, default=3600, help="lifetime in seconds")


def run(args: argparse.Namespace) -> int:
    """Print one token on stdout."""
    if args.ttl <= 0:
        print("tollgate token: --ttl must be positive", file=sys.stderr)
        return 2
    try:
        key = load_signing_key(Path(args.run_dir))
    except IssuerNotReadyError as exc:
        print(f"tollgate token: no demo issuer key ({exc}); run `tollgate up` first "
              "(or pass the --run-dir it used)", file=sys.stderr)
        return 1
    print(mint(key, subject=args.sub, scopes=args.scope, plan=args.plan, tenant=args.tenant,
               ttl=args.ttl))
    return 0
