"""A real NGINX with deploy/nginx/ asks authz-service (`--http-forwarded nginx`) through
`auth_request`: every answer a client gets is the one the gRPC door gives for the same
request, and the upstream sees the identity the gRPC door would have set."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.kits import jwt_kit
from tests.kits.authz_stack import API_KEY
from tests.kits.door_kit import Ask
from tests.kits.grpc_kit import authz_process
from tests.kits.proxy_kit import (
    CASES,
    EXPECTED,
    Fronted,
    ask_proxy,
    bearer,
    echo_upstream,
    forwarded_policy,
    nginx,
    through_grpc,
    through_proxy,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def fronted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fronted]:
    workdir = tmp_path_factory.mktemp("nginx")
    config, key = forwarded_policy(workdir)
    env = {"AUTHZ_HTTP_FORWARDED": "nginx", "AUTHZ_HTTP_TRUSTED_FORWARDERS": "unix"}
    with authz_process(config, workdir, env) as (_, client), echo_upstream() as app, \
            nginx(workdir, f"unix:{workdir / 'authz-http.sock'}", app) as port:
        yield Fronted(client, key, port)


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


def test_with_the_door_unreachable_nginx_answers_503_and_never_the_upstream(
    tmp_path: Path,
) -> None:
    with echo_upstream() as app, nginx(tmp_path, f"unix:{tmp_path / 'nobody.sock'}",
                                       app) as port:
        reply = ask_proxy(port, "GET", "/orders/1", {"x-api-key": API_KEY})
    assert reply.status == 503 and reply.upstream is None
