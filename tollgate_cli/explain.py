"""`tollgate explain --config FILE --request JSON [--identity JSON]`: for one request,
which route matched (and why the earlier ones did not), who the caller is, why each
requirement passed or failed, and the answer. Offline: reads files, fetches nothing.

--request (JSON, or @FILE): {"method", "path" (query allowed), "host", "headers",
"source_address", "route", "scopes", "body"}; a bearer token in "headers" is verified
against keys from `jwks_file` (keys behind a URL are not fetched: the answer says so).
--identity (JSON, or @FILE) takes a caller as proven instead: {"subject", "scopes",
"roles", "claims", "kind", "source", "tenant", "plan"}.
Exit status: 0 allowed, 1 denied, 2 the config or the input is unusable.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from types import MappingProxyType
from typing import Any

from authz_service.contract import ROUTE_EXTENSION, SCOPES_EXTENSION
from authz_service.keys.registry import KeyRegistry
from authz_service.models import Allow, Identity, RequestContext
from authz_service.policy.explain import explain_request
from authz_service.policy.loading import load_policy
from tollgate.config import ConfigError


class InputError(ValueError):
    """A --request or --identity that cannot be used; the message says why."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="the authz config file")
    parser.add_argument("--request", required=True, help="the request as JSON, or @FILE")
    parser.add_argument("--identity", help="a caller taken as proven, as JSON, or @FILE")
    parser.add_argument("--now", type=float, help="the clock, seconds since the epoch")


def run(args: argparse.Namespace) -> int:
    try:
        policy = load_policy(args.config, KeyRegistry())
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    try:
        ctx = request_context(_json(args.request, "--request"))
        identity = given_identity(_json(args.identity, "--identity")) if args.identity else None
    except InputError as exc:
        print(f"tollgate explain: {exc}", file=sys.stderr)
        return 2
    now = args.now if args.now is not None else time.time()
    explanation = explain_request(policy, ctx, now, identity)
    print("\n".join(explanation.lines()))
    return 0 if isinstance(explanation.decision, Allow) else 1


def _json(text: str, flag: str) -> dict[str, Any]:
    try:
        raw = Path(text[1:]).read_text(encoding="utf-8") if text.startswith("@") else text
        value = json.loads(raw)
    except (OSError, ValueError) as exc:
        raise InputError(f"{flag}: {exc}") from None
    if not isinstance(value, dict):
        raise InputError(f"{flag}: expected a JSON object")
    return value


_REQUEST_KEYS = {"method", "path", "host", "headers", "source_address", "route", "scopes",
                 "body", "scheme", "principal"}
_IDENTITY_KEYS = {"subject", "scopes", "roles", "claims", "kind", "source", "tenant", "plan",
                  "issuer"}


def request_context(data: dict[str, Any]) -> RequestContext:
    unknown = set(data) - _REQUEST_KEYS
    if unknown:
        raise InputError(f"--request: unknown keys {sorted(unknown)}")
    headers = data.get("headers", {})
    if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
        raise InputError("--request: 'headers' must map names to strings")
    path, _, query = str(data.get("path", "/")).partition("?")
    extensions = {k: str(data[n]) for n, k in (("route", ROUTE_EXTENSION),
                                                ("scopes", SCOPES_EXTENSION)) if n in data}
    return RequestContext(
        method=str(data.get("method", "GET")).upper(),
        path=path,
        host=str(data.get("host", "")),
        scheme=str(data.get("scheme", "https")),
        query=query,
        headers=MappingProxyType({k.lower(): v for k, v in headers.items()}),
        peer_principal=str(data.get("principal", "")),
        peer_certificate=bool(data.get("principal")),
        context_extensions=MappingProxyType(extensions),
        body=str(data.get("body", "")).encode(),
        source_address=str(data.get("source_address", "")),
    )


def given_identity(data: dict[str, Any]) -> Identity:
    unknown = set(data) - _IDENTITY_KEYS
    if unknown:
        raise InputError(f"--identity: unknown keys {sorted(unknown)}")
    scopes = data.get("scopes", [])
    if isinstance(scopes, str):
        scopes = scopes.split()
    claims = data.get("claims", {})
    if not isinstance(claims, dict):
        raise InputError("--identity: 'claims' must be an object")
    if "roles" in data:
        claims = {**claims, "roles": list(data["roles"])}
    return Identity(
        kind=str(data.get("kind", "jwt")),
        subject=str(data.get("subject", "explain-user")),
        source=str(data.get("source", "explain")),
        scopes=frozenset(str(s) for s in scopes),
        claims=MappingProxyType(claims),
        issuer=str(data.get("issuer", "")),
        tenant=str(data.get("tenant", "")),
        plan=str(data.get("plan", "")),
    )
