"""Introspection in the real authz-service process: the same answers through both doors,
one introspection for many concurrent Checks, and through a real Envoy (gRPC ext_authz,
0.5 s timeout) an endpoint outage answered 503 `introspection_unavailable` by authz
before Envoy's own timeout, never an allow."""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.kits.door_kit import Ask, HttpDoorClient, Reply, ask_grpc, ask_http, door_socket
from tests.kits.envoy_kit import envoy_in_front
from tests.kits.grpc_kit import AuthzClient, authz_process
from tests.kits.introspection_kit import Endpoint, introspection_endpoint

pytestmark = pytest.mark.integration

SECRET_ENV = "TG_DOORS_INTROSPECTION_SECRET"

CONFIG = """
identities:
  - name: opaque
    introspection:
      endpoint: {url}
      client: {{method: client_secret_basic, client_id: tollgate, client_secret_env: {env}}}
      issuers: [https://as.test]
      audiences: [orders-api]
      wait_seconds: 0.3
      cache: {{negative_ttl_seconds: 60}}
routes:
  - name: orders-api  # the name envoy_kit's Envoy gives its /orders routes
    match: {{methods: [GET], path: {{template: "/orders/{{id}}"}}}}
    require: {{scopes: {{all_of: ["orders:read"]}}}}
upstream:
  claims: {{email: x-user-email}}
"""


@dataclass
class Service:
    endpoint: Endpoint
    client: AuthzClient
    workdir: Path


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    workdir = tmp_path_factory.mktemp("introspection")
    with introspection_endpoint() as endpoint:
        config = workdir / "authz.yaml"
        config.write_text(CONFIG.format(url=endpoint.url, env=SECRET_ENV))
        with authz_process(config, workdir, env={SECRET_ENV: "doors-secret"}) as (_, client):
            yield Service(endpoint, client, workdir)


@pytest.fixture
def endpoint(service: Service) -> Iterator[Endpoint]:
    endpoint = service.endpoint
    yield endpoint
    with endpoint.lock:
        endpoint.status, endpoint.raw, endpoint.delay = 200, None, 0.0
    endpoint.release.set()
    endpoint.release.clear()


def active(endpoint: Endpoint, token: str, **claims: object) -> None:
    endpoint.active(token, **{"iss": "https://as.test", "aud": "orders-api",
                              "email": "alice@x.test", **claims})


def both(service: Service, token: str) -> tuple[Reply, Reply]:
    ask = Ask(headers={"authorization": f"Bearer {token}"})
    http = HttpDoorClient(door_socket(service.workdir))
    try:
        return ask_grpc(service.client, ask), ask_http(http, ask)
    finally:
        http.close()


def test_an_active_token_gets_the_same_allow_through_both_doors(
    service: Service, endpoint: Endpoint
) -> None:
    active(endpoint, "door-active", sub="alice", plan="gold")
    grpc_reply, http_reply = both(service, "door-active")
    assert (grpc_reply.status, http_reply.status) == (200, 200)
    assert grpc_reply.headers == http_reply.headers
    assert grpc_reply.headers["x-tollgate-subject"] == "alice"
    assert grpc_reply.headers["x-tollgate-identity"] == "introspection"
    assert grpc_reply.headers["x-user-email"] == "alice@x.test"
    assert "authorization" in grpc_reply.removed  # the opaque token is not passed on
    assert http_reply.metadata["plan"] == "gold"
    assert endpoint.calls_for("door-active") == 1  # the second door's Check was cached


@pytest.mark.parametrize(("token", "claims"), [
    ("door-inactive", {"active": False}),
    ("door-expired", {"exp": 1_000_000}),
    ("door-wrong-aud", {"aud": "another-api"}),
    ("door-wrong-iss", {"iss": "https://evil.test"}),
])
def test_a_refused_token_is_the_same_401_through_both_doors(
    service: Service, endpoint: Endpoint, token: str, claims: dict[str, object]
) -> None:
    active(endpoint, token, **claims)
    grpc_reply, http_reply = both(service, token)
    assert (grpc_reply.status, grpc_reply.code) == (401, "invalid_token")
    assert http_reply.body == grpc_reply.body
    assert http_reply.headers["www-authenticate"] == grpc_reply.headers["www-authenticate"]
    assert endpoint.calls_for(token) == 1  # the no is cached (negative TTL)


def test_an_endpoint_outage_is_the_same_503_through_both_doors(
    service: Service, endpoint: Endpoint
) -> None:
    endpoint.status = 503
    grpc_reply, http_reply = both(service, "door-outage")
    assert (grpc_reply.status, grpc_reply.code) == (503, "introspection_unavailable")
    assert (http_reply.status, http_reply.code) == (503, "introspection_unavailable")
    assert http_reply.body == grpc_reply.body
    assert endpoint.calls_for("door-outage") == 2  # not cached: each Check asked


@pytest.mark.parametrize(("token", "cnf", "description"), [
    ("door-cert-bound", {"x5t#S256": "q" * 43},
     "token is bound to a client certificate; none was presented"),
    ("door-dpop-bound", {"jkt": "k" * 43}, "DPoP-bound tokens are not accepted here"),
])
def test_a_sender_constrained_token_is_not_a_bearer_token_through_either_door(
    service: Service, endpoint: Endpoint, token: str, cnf: dict[str, str], description: str
) -> None:
    """RFC 8705 §3.2, RFC 9449 §6.2: the answer's cnf binds the token, so without its
    certificate (or, DPoP off, at all) it is refused, cached answer or not."""
    active(endpoint, token, cnf=cnf)
    for _ in range(2):  # the second time from the cache
        grpc_reply, http_reply = both(service, token)
        assert (grpc_reply.status, grpc_reply.code) == (401, "invalid_token")
        assert grpc_reply.body is not None
        assert grpc_reply.body["error_description"] == description
        assert http_reply.body == grpc_reply.body
        assert http_reply.headers["www-authenticate"] == grpc_reply.headers["www-authenticate"]
    assert endpoint.calls_for(token) == 1


def test_many_concurrent_checks_of_one_new_token_make_one_introspection(
    service: Service, endpoint: Endpoint
) -> None:
    active(endpoint, "door-burst")
    endpoint.delay = 0.2  # every Check below arrives while the first call is open
    clients = [HttpDoorClient(door_socket(service.workdir)) for _ in range(16)]
    replies: list[Reply] = []
    lock = threading.Lock()
    ask = Ask(headers={"authorization": "Bearer door-burst"})

    def check(client: HttpDoorClient) -> None:
        reply = ask_http(client, ask)
        with lock:
            replies.append(reply)

    threads = [threading.Thread(target=check, args=(c,)) for c in clients]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
    finally:
        for client in clients:
            client.close()
    assert [r.status for r in replies] == [200] * 16
    assert endpoint.calls_for("door-burst") == 1


# --- through a real Envoy -----------------------------------------------------------

def through_envoy(port: int, token: str) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/orders/1", headers={"authorization": f"Bearer {token}"})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


@pytest.fixture(scope="module")
def envoy(service: Service) -> Iterator[int]:
    # ext_authz over gRPC, timeout 0.5 s (envoy/ ships the same): authz's 0.3 s wait below it.
    with envoy_in_front(service.workdir, service.workdir / "authz.sock", timeout="0.5s") as port:
        yield port


def test_through_envoy_an_active_token_reaches_the_upstream(
    envoy: int, endpoint: Endpoint
) -> None:
    active(endpoint, "envoy-active")
    assert through_envoy(envoy, "envoy-active")[::2] == (200, b"upstream")


def test_through_envoy_an_inactive_token_is_401(envoy: int, endpoint: Endpoint) -> None:
    status, headers, body = through_envoy(envoy, "envoy-inactive")
    assert (status, json.loads(body)["error"]) == (401, "invalid_token")
    assert 'error="invalid_token"' in headers["www-authenticate"]


def test_through_envoy_a_certificate_bound_token_without_its_certificate_is_401(
    envoy: int, endpoint: Endpoint
) -> None:
    active(endpoint, "envoy-cert-bound", cnf={"x5t#S256": "q" * 43})
    status, headers, body = through_envoy(envoy, "envoy-cert-bound")
    assert (status, json.loads(body)["error"]) == (401, "invalid_token")
    assert 'error="invalid_token"' in headers["www-authenticate"]


def test_through_envoy_a_hung_endpoint_is_authz_503_before_envoy_times_out(
    envoy: int, endpoint: Endpoint
) -> None:
    active(endpoint, "envoy-hung")
    endpoint.delay = 30  # released when the test ends
    status, headers, body = through_envoy(envoy, "envoy-hung")
    # authz's wait (0.3 s) ends before Envoy's 0.5 s timeout: the client hears why (an
    # Envoy timeout would be a bare 403), and it is never the upstream's 200.
    assert (status, json.loads(body)["error"]) == (503, "introspection_unavailable")
    assert headers["retry-after"] == "1"
