"""One table of requests, asked through both doors of one authz-service process: the
gRPC Check and the plain-HTTP door give the same decisions, codes, challenges,
bodies, upstream headers, removals and metadata."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.kits import jwt_kit
from tests.kits.authz_stack import API_KEY, Stack
from tests.kits.door_kit import Ask, HttpDoorClient, ask_grpc, ask_http, door_socket

pytestmark = pytest.mark.integration

ADMIN = "spiffe://tollgate.test/ns/prod/sa/admin"


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


Case = Callable[[Stack], Ask]

CASES: dict[str, Case] = {
    "valid token": lambda s: Ask(headers=bearer(jwt_kit.mint(s.key, sub="alice", plan="gold",
                                                             tenant="acme", email="a@x.test"))),
    "no credentials": lambda s: Ask(),
    "expired token": lambda s: Ask(headers=bearer(jwt_kit.mint(
        s.key, exp=1_000_000, iat=999_000, nbf=999_000))),
    "bad signature": lambda s: Ask(headers=bearer(jwt_kit.mint(s.key)[:-6] + "AAAAAA")),
    "another issuer": lambda s: Ask(headers=bearer(jwt_kit.mint(s.key, iss="https://evil.test"))),
    "insufficient scope": lambda s: Ask("POST", "/orders", bearer(jwt_kit.mint(s.key))),
    "empty bearer": lambda s: Ask(headers={"authorization": "Bearer "}),
    "token twice": lambda s: Ask(headers={"authorization": "Bearer a.b.c, Bearer d.e.f"}),
    "api key": lambda s: Ask(headers={"x-api-key": API_KEY}),
    "wrong api key": lambda s: Ask(headers={"x-api-key": "tg_live_nope"}),
    "mtls admin": lambda s: Ask(path="/admin/x", principal=ADMIN),
    "mtls other peer": lambda s: Ask(path="/admin/x",
                                     principal="spiffe://tollgate.test/ns/prod/sa/x"),
    "mtls not a spiffe id": lambda s: Ask(path="/admin/x", principal="https://x.test/a"),
    "no peer on mtls route": lambda s: Ask(path="/admin/x"),
    "unmatched route": lambda s: Ask(path="/nowhere", headers=bearer(jwt_kit.mint(s.key))),
    "ambiguous path": lambda s: Ask(path="/orders/../admin"),
    "forged identity headers": lambda s: Ask(headers={
        **bearer(jwt_kit.mint(s.key)), "x-tollgate-plan": "gold", "x-tollgate-tenant": "x"}),
    "route named by envoy": lambda s: Ask(path="/anything", route="orders-read",
                                          headers=bearer(jwt_kit.mint(s.key))),
    "unknown route named": lambda s: Ask(route="no-such-route",
                                         headers=bearer(jwt_kit.mint(s.key))),
    "extra scopes named by envoy": lambda s: Ask(scopes="admin",
                                                 headers=bearer(jwt_kit.mint(s.key))),
    "malformed body on a validated route": lambda s: Ask(
        "POST", "/validated", {**bearer(jwt_kit.mint(s.key)), "content-type":
                               "application/json"}, body=b'{"n": "x"}'),
}

EXPECTED = {
    "valid token": (200, "ok"), "no credentials": (401, "missing_credentials"),
    "expired token": (401, "invalid_token"), "bad signature": (401, "invalid_token"),
    "another issuer": (401, "invalid_token"), "insufficient scope": (403, "insufficient_scope"),
    "empty bearer": (400, "invalid_request"), "token twice": (400, "invalid_request"),
    "api key": (200, "ok"), "wrong api key": (401, "invalid_token"),
    "mtls admin": (200, "ok"), "mtls other peer": (403, "peer_not_allowed"),
    "mtls not a spiffe id": (403, "peer_not_allowed"),
    "no peer on mtls route": (401, "missing_credentials"),
    "unmatched route": (403, "no_matching_route"), "ambiguous path": (400, "invalid_request"),
    "forged identity headers": (200, "ok"), "route named by envoy": (200, "ok"),
    "unknown route named": (403, "no_matching_route"),
    "extra scopes named by envoy": (403, "insufficient_scope"),
    "malformed body on a validated route": (400, "schema_violation"),
}


@pytest.fixture(scope="module")
def http(stack: Stack) -> Iterator[HttpDoorClient]:
    client = HttpDoorClient(door_socket(stack.workdir))
    yield client
    client.close()


def test_every_case_has_an_expectation() -> None:
    assert set(CASES) == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(CASES))
def test_both_doors_give_the_same_answer(stack: Stack, http: HttpDoorClient, name: str) -> None:
    ask = CASES[name](stack)
    grpc_reply, http_reply = ask_grpc(stack.client, ask), ask_http(http, ask)
    assert (grpc_reply.status, grpc_reply.code) == EXPECTED[name]
    assert (http_reply.status, http_reply.code) == EXPECTED[name]
    assert http_reply.body == grpc_reply.body  # the same JSON, request_id included
    if grpc_reply.status == 200:
        assert http_reply.headers == grpc_reply.headers
        assert sorted(http_reply.removed) == sorted(grpc_reply.removed)
        assert http_reply.metadata == grpc_reply.metadata
    else:
        for header in ("www-authenticate", "content-type", "cache-control"):
            assert http_reply.headers.get(header) == grpc_reply.headers.get(header), header
