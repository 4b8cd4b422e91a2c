"""A real NGINX with deploy/nginx/ asks authz-service (`--http-forwarded nginx`) through
`auth_request`: every answer a client gets is the one the gRPC door gives for the same
request, and the upstream sees the identity the gRPC door would have set."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.kits.authz_stack import API_KEY
from tests.kits.grpc_kit import authz_process
from tests.kits.proxy_kit import (
    CASES,
    Fronted,
    ask_proxy,
    assert_a_head_request_is_decided_as_head,
    assert_the_credential_stays_at_the_proxy,
    both_doors,
    echo_upstream,
    forwarded_policy,
    limited_thrice,
    nginx,
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
    by_grpc, by_nginx = both_doors(fronted, case)
    assert by_nginx == by_grpc


def test_the_rate_limit_reaches_the_client_with_its_headers(fronted: Fronted) -> None:
    by_grpc, by_nginx = limited_thrice(fronted)
    assert by_nginx[0].client_headers["x-ratelimit-remaining"] == "1"
    assert by_nginx[0].client_headers == by_grpc[0].client_headers


def test_the_upstream_never_sees_the_credential(fronted: Fronted) -> None:
    assert_the_credential_stays_at_the_proxy(fronted.port)


def test_with_the_door_unreachable_nginx_answers_503_and_never_the_upstream(
    tmp_path: Path,
) -> None:
    with echo_upstream() as app, nginx(tmp_path, f"unix:{tmp_path / 'nobody.sock'}",
                                       app) as port:
        reply = ask_proxy(port, "GET", "/orders/1", {"x-api-key": API_KEY})
    assert reply.status == 503 and reply.upstream is None


def test_a_head_request_is_decided_as_head(fronted: Fronted) -> None:
    assert_a_head_request_is_decided_as_head(fronted)
