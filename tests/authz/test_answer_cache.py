"""A verified token's answer is kept, and kept only for the policy that gave it."""

from __future__ import annotations

import json
from types import MappingProxyType

from authz_service.config import AuthzConfig
from authz_service.doors.grpc_wire import AnswerEncoder
from authz_service.keys.keyset import KeySet, parse_jwks
from authz_service.models import Allow, Answer, RequestContext
from authz_service.policy.compiled import compile_config
from authz_service.policy.engine import decide
from tests.kits import jwt_kit

T0 = 1_800_000_000.0


class StaticKeys:
    def __init__(self, keys: KeySet) -> None:
        self.key_set = keys
        self.generation = 1


def test_a_cached_token_reuses_its_answer_within_one_policy_only() -> None:
    key = jwt_kit.rsa_key("k1")
    keys = StaticKeys(parse_jwks(json.dumps(jwt_kit.jwks(key))))
    config = AuthzConfig.model_validate({
        "identities": [{"name": "idp", "jwt": {
            "issuer": jwt_kit.ISSUER, "jwks_uri": "https://idp.test/jwks"}}],
        "routes": [{"name": "a", "match": {"path": {"prefix": "/a"}}},
                   {"name": "b", "match": {"path": {"prefix": "/b"}}}],
    })
    token = jwt_kit.mint(key, iat=int(T0), nbf=int(T0), exp=int(T0) + 300, sub="alice")

    def ask(policy: object, path: str) -> Allow:
        ctx = RequestContext("GET", path, headers=MappingProxyType(
            {"authorization": f"Bearer {token}"}))
        outcome = decide(policy, ctx, T0)  # type: ignore[arg-type]
        assert isinstance(outcome, Allow)
        return outcome

    policy = compile_config(config, lambda name, source: keys)
    first, second = ask(policy, "/a/1"), ask(policy, "/a/2")
    assert first is second
    encoder = AnswerEncoder()
    assert encoder.encode(Answer(first), "") is encoder.encode(Answer(second), "")
    other_route = ask(policy, "/b")
    assert other_route is not first and other_route.route == "b"
    reloaded = compile_config(config, lambda name, source: keys)
    assert ask(reloaded, "/a/1") is not first  # a new policy, a new cache, a new answer
    assert dict(first.metadata)["subject"] == "alice"
