"""A real NGINX with deploy/nginx/ asks authz-service (`--http-forwarded nginx`) through
`auth_request`: every answer a client gets is the one the gRPC door gives for the same
request, and the upstream sees the identity the gRPC door would have set."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.authz import jwt_kit
from tests.authz.conftest import API_KEY, config_text
from tests.authz.door_kit import Ask, Reply, ask_grpc
from tests.authz.grpc_kit import AuthzClient, authz_process
from tests.authz.proxy_kit import ask_proxy, echo_upstream, nginx

pytestmark = pytest.mark.integration

LIMITED_ROUTE = """
  - name: limited
    match: {path: {prefix: /limited}}
    identities: [idp]
"""
RATE_LIMITS = """
rate_limits:
  rules: rules.yaml
  domain: api
  sets:
    - name: per-subject
      stage: after_authz
      routes: [limited]
      descriptors: [{actions: [{subject: {}}]}]
      on_store_failure: allow
"""
RULES = """
domain: api
descriptors:
  - key: subject
    rate_limit: {unit: minute, requests_per_unit: 2}
"""
# What a denial carries to the client, whichever door answered it.
DENIAL_HEADERS = ("content-type", "cache-control", "www-authenticate", "retry-after",
                  "x-ratelimit-limit", "x-ratelimit-remaining")


@dataclass
class Fronted:
    grpc: AuthzClient
    key: jwt_kit.SigningKey
    port: int  # the proxy's


def forwarded_policy(workdir: Path) -> tuple[Path, jwt_kit.SigningKey]:
    """The suite's policy (tests/authz/conftest.py) plus a route limited per subject."""
    key = jwt_kit.rsa_key("rsa-fwd")
    jwks = workdir / "jwks.json"
    jwks.write_text(json.dumps(jwt_kit.jwks(key)))
    (workdir / "rules.yaml").write_text(RULES)
    config = workdir / "authz.yaml"
    config.write_text(config_text(jwks, extra_routes=LIMITED_ROUTE) + RATE_LIMITS)
    return config, key


@pytest.fixture(scope="module")
def fronted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fronted]:
    workdir = tmp_path_factory.mktemp("nginx")
    config, key = forwarded_policy(workdir)
    env = {"AUTHZ_HTTP_FORWARDED": "nginx", "AUTHZ_HTTP_TRUSTED_FORWARDERS": "unix"}
    with authz_process(config, workdir, env) as (_, client), echo_upstream() as app, \
            nginx(workdir, f"unix:{workdir / 'authz-http.sock'}", app) as port:
        yield Fronted(client, key, port)


def through_proxy(fronted: Fronted, ask: Ask) -> Reply:
    reply = ask_proxy(fronted.port, ask.method, ask.path,
                      {**ask.headers, "x-request-id": ask.request_id}, ask.body)
    assert len(set(reply.names)) == len(reply.names), f"a header twice: {reply.names}"
    if reply.status == 200:
        assert reply.upstream is not None, reply
        upstream = {k: v for k, v in reply.upstream.items() if k.startswith("x-tollgate-")}
        client = {k: v for k, v in reply.headers.items() if k.startswith("x-ratelimit-")}
        return Reply(200, upstream, None, client_headers=client)
    headers = {k: v for k, v in reply.headers.items() if k in DENIAL_HEADERS}
    return Reply(reply.status, headers, reply.json())


def through_grpc(fronted: Fronted, ask: Ask) -> Reply:
    """The gRPC door's answer as the client (denial) or the upstream (allow) sees it."""
    reply = ask_grpc(fronted.grpc, Ask(ask.method, ask.path, ask.headers, ask.body,
                                       source_address="127.0.0.1",
                                       request_id=ask.request_id))
    if reply.status == 200:
        upstream = {k: v for k, v in reply.headers.items() if k.startswith("x-tollgate-")}
        return Reply(200, upstream, None, client_headers=reply.client_headers)
    return Reply(reply.status, {k: v for k, v in reply.headers.items()
                                if k in DENIAL_HEADERS}, reply.body)


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


CASES: dict[str, Callable[[jwt_kit.SigningKey], Ask]] = {
    "valid token": lambda k: Ask(headers=bearer(jwt_kit.mint(k, sub="alice", plan="gold",
                                                             tenant="acme"))),
    "no credentials": lambda k: Ask(),
    "expired token": lambda k: Ask(headers=bearer(jwt_kit.mint(
        k, exp=1_000_000, iat=999_000, nbf=999_000))),
    "bad signature": lambda k: Ask(headers=bearer(jwt_kit.mint(k)[:-6] + "AAAAAA")),
    "insufficient scope": lambda k: Ask("POST", "/orders", bearer(jwt_kit.mint(k))),
    "empty bearer": lambda k: Ask(headers={"authorization": "Bearer "}),
    "api key": lambda k: Ask(headers={"x-api-key": API_KEY}),
    "wrong api key": lambda k: Ask(headers={"x-api-key": "tg_live_nope"}),
    "no peer certificate on the mtls route": lambda k: Ask(path="/admin/x"),
    "unmatched route": lambda k: Ask(path="/nowhere", headers=bearer(jwt_kit.mint(k))),
    "ambiguous path": lambda k: Ask(path="/orders/../admin"),
    "query string": lambda k: Ask(path="/orders/7?view=full", headers=bearer(jwt_kit.mint(k))),
    "forged identity headers": lambda k: Ask(headers={
        **bearer(jwt_kit.mint(k)), "x-tollgate-plan": "gold", "x-tollgate-tenant": "x"}),
    "forged envoy attribute": lambda k: Ask(path="/admin/x", headers={
        "x-tollgate-attr-peer-principal": "spiffe://tollgate.test/ns/prod/sa/admin"}),
}
EXPECTED = {
    "valid token": 200, "no credentials": 401, "expired token": 401, "bad signature": 401,
    "insufficient scope": 403, "empty bearer": 400, "api key": 200, "wrong api key": 401,
    "no peer certificate on the mtls route": 401, "unmatched route": 403,
    "ambiguous path": 400, "query string": 200, "forged identity headers": 200,
    "forged envoy attribute": 401,
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_nginx_answers_as_the_grpc_door_does(fronted: Fronted, case: str) -> None:
    ask = CASES[case](fronted.key)
    ask = Ask(ask.method, ask.path, ask.headers, ask.body,
              request_id="rid-" + case.replace(" ", "-"))
    by_grpc = through_grpc(fronted, ask)
    by_nginx = through_proxy(fronted, ask)
    assert by_grpc.status == EXPECTED[case], by_grpc
    assert by_nginx == by_grpc


def test_the_rate_limit_reaches_the_client_with_its_headers(fronted: Fronted) -> None:
    grpc_token, nginx_token = (bearer(jwt_kit.mint(fronted.key, sub=who))
                               for who in ("grpc-limited", "nginx-limited"))
    by_grpc = [through_grpc(fronted, Ask(path="/limited/1", headers=grpc_token))
               for _ in range(3)]
    by_nginx = [through_proxy(fronted, Ask(path="/limited/1", headers=nginx_token))
                for _ in range(3)]
    assert [r.status for r in by_nginx] == [r.status for r in by_grpc] == [200, 200, 429]
    assert by_nginx[0].client_headers["x-ratelimit-remaining"] == "1"
    assert by_nginx[0].client_headers == by_grpc[0].client_headers
    denied_grpc, denied_nginx = by_grpc[2], by_nginx[2]
    assert denied_nginx.code == "rate_limited"
    assert denied_nginx.body == denied_grpc.body
    for name in ("content-type", "retry-after", "x-ratelimit-limit", "x-ratelimit-remaining"):
        assert denied_nginx.headers[name] == denied_grpc.headers[name], name


def test_the_upstream_never_sees_the_credential(fronted: Fronted) -> None:
    reply = ask_proxy(fronted.port, "GET", "/orders/1", {"x-api-key": API_KEY})
    assert reply.status == 200 and reply.upstream is not None
    assert reply.upstream["x-tollgate-subject"] == "svc-billing"
    assert "x-api-key" not in reply.upstream and "authorization" not in reply.upstream
