"""The curl lines `tollgate up` prints: one per answer the stack can give (200 ... 429)."""

from __future__ import annotations

import os
from pathlib import Path

from tollgate.demo_issuer import SigningKey
from tollgate.devcerts import DevCerts
from tollgate.envoy_config import EnvoyPorts
from tollgate.token import mint


def curl_lines(key: SigningKey, certs: DevCerts, ports: EnvoyPorts, cwd: Path) -> str:
    """Shell lines a user can paste, with freshly minted tokens."""
    ca = _short(certs.ca.cert, cwd)
    admin = f"--cert {_short(certs.admin.cert, cwd)} --key {_short(certs.admin.key, cwd)}"
    intruder = f"--cert {_short(certs.intruder.cert, cwd)} --key {_short(certs.intruder.key, cwd)}"
    https = f"https://localhost:{ports.https}"
    mtls = f"https://localhost:{ports.mtls}"
    reader = mint(key, subject="alice", scopes="orders:read")
    limited = mint(key, subject="bob", scopes="orders:read")
    c = f"curl -sS -i --cacert {ca}"
    return "\n".join([
        "",
        "Tollgate is up. Tokens (`tollgate token --help` mints more):",
        f"  READER={reader}",
        f"  LIMITED={limited}",
        "",
        "# 200: a token with scope orders:read (the upstream echoes the x-tollgate-* headers)",
        f'{c} -H "Authorization: Bearer $READER" {https}/orders/42',
        "# 401: no credentials -> WWW-Authenticate: Bearer realm=\"tollgate\"",
        f"{c} {https}/orders/42",
        "# 401: a bad token -> error=\"invalid_token\"",
        f'{c} -H "Authorization: Bearer not.a.token" {https}/orders/42',
        "# 403: POST /orders needs orders:write -> error=\"insufficient_scope\"",
        f"{c} -H \"Authorization: Bearer $READER\" -H 'content-type: application/json' "
        f"-d '{{}}' {https}/orders",
        "# 400: two credentials at once -> error=\"invalid_request\"",
        f'{c} -H "Authorization: Bearer $READER" -H "Authorization: Bearer $READER" '
        f"{https}/orders/42",
        "# 429: the free plan allows 5 requests a minute per subject (x-ratelimit-* headers)",
        f'for i in 1 2 3 4 5 6; do {c} -o /dev/null -w "%{{http_code}}\\n" '
        f'-H "Authorization: Bearer $LIMITED" {https}/orders; done',
        "# mTLS: the admin SPIFFE ID may use /admin (200), another workload may not (403)",
        f"{c} {admin} {mtls}/admin/stats",
        f"{c} {intruder} {mtls}/admin/stats",
        "",
    ])


def _short(path: Path, cwd: Path) -> str:
    """`path` relative to `cwd` when it is below it (shorter lines to paste)."""
    try:
        return os.path.relpath(path, cwd) if path.is_relative_to(cwd) else str(path)
    except ValueError:
        return str(path)
