"""Calls one decide() makes (Python functions, C functions): a cached token and an uncached one.

Deterministic, so two trees compare exactly on a busy machine (run each with its tree first
on the path; this tree's editable install is found otherwise):

    PYTHONPATH=OTHER_TREE .venv/bin/python -m bench.decide_calls
    .venv/bin/python -m bench.decide_calls
"""

from __future__ import annotations

import json
import sys
import time
from types import FrameType, MappingProxyType
from typing import Any

from authz_service.config import AuthzConfig
from authz_service.keys.keyset import parse_jwks
from authz_service.models import RequestContext
from authz_service.policy.compiled import compile_config
from authz_service.policy.engine import decide
from tests.kits import jwt_kit

# Appended, not put first: PYTHONPATH (another tree) stays ahead of this one.



class Keys:
    generation = 0

    def __init__(self, key_set: Any) -> None:
        self.key_set = key_set


key = jwt_kit.rsa_key("k1")
keys = Keys(parse_jwks(json.dumps(jwt_kit.jwks(key))))
config = AuthzConfig.model_validate({"identities": [{"name": "idp", "jwt": {
    "issuer": jwt_kit.ISSUER, "jwks_uri": "https://idp.test/jwks",
    "audiences": [jwt_kit.AUDIENCE]}}],
    "routes": [{"name": "r", "require": {"scopes": {"all_of": ["orders:read"]}}}]})
policy = compile_config(config, lambda n, s: keys)
now = time.time()


def ctx(token: str) -> RequestContext:
    return RequestContext("GET", "/x", headers=MappingProxyType(
        {"authorization": f"Bearer {token}"}))


warm = ctx(jwt_kit.mint(key, sub="w", scope="orders:read"))
decide(policy, warm, now)
decide(policy, warm, now)
fresh = ctx(jwt_kit.mint(key, sub="f", scope="orders:read"))
for name, request in (("cached", warm), ("uncached", fresh)):
    counts = {"call": 0, "c_call": 0}

    def count(frame: FrameType, event: str, arg: object, counts: dict[str, int] = counts) -> None:
        if event in counts:
            counts[event] += 1

    sys.setprofile(count)
    out = decide(policy, request, now)
    sys.setprofile(None)
    if type(out).__name__ != "Allow":
        raise SystemExit(f"expected an Allow, got {out}")
    print(f"{name}: {counts['call']} Python calls, {counts['c_call']} C calls")
