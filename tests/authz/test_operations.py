"""What an on-call engineer sees of a real authz-service: its /metrics scrape, its
health on both doors, its denials, while the IdP and the config fail for real.

The IdP is a real HTTP server on a fixed loopback port, stopped and started again;
the config is a real file the service watches.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.kits import jwt_kit
from tests.kits.door_kit import HttpDoorClient, RawResponse, door_socket
from tests.kits.grpc_kit import authz_process, check_request
from tests.kits.idp_kit import (
    KEY,
    SERVICE,
    Idp,
    policy,
)
from tests.kits.metrics_kit import reading, scrape, scrape_text, value
from tests.kits.processes import free_port, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def idp() -> Iterator[Idp]:
    server = Idp()
    try:
        yield server
    finally:
        server.stop()


def http_get(workdir: Path, path: str) -> RawResponse:
    client = HttpDoorClient(door_socket(workdir))
    try:
        return client.exchange(f"GET {path} HTTP/1.1\r\nhost: authz\r\n\r\n".encode())
    finally:
        client.close()


def test_an_idp_down_since_start_is_counted_not_ready_and_named_in_the_denial(
    idp: Idp, tmp_path: Path
) -> None:
    config = tmp_path / "authz.yaml"
    config.write_text(policy(idp.url))
    port = free_port()
    env = {"AUTHZ_METRICS_ADDRESS": f"127.0.0.1:{port}"}
    with authz_process(config, tmp_path, env=env) as (_, client):
        failed = reading(port, "tollgate_authz_jwks_fetches_total",
                         {"source": "corp", "result": "http_error"})
        wait_for(lambda: failed() >= 2, what="failed JWKS fetches counted")
        samples = scrape(port)
        assert value(samples, "tollgate_authz_jwks_keys", {"source": "corp"}) == 0
        assert value(samples, "tollgate_authz_jwks_fetches_total",
                     {"source": "corp", "result": "ok"}) in (None, 0)
        # Live, not ready: on every gRPC health name and on the HTTP door.
        assert client.live()
        assert not client.serving("")
        assert not client.serving(SERVICE)
        assert http_get(tmp_path, "/healthz").status == 200
        ready = http_get(tmp_path, "/ready")
        assert ready.status == 503
        assert b"keys:corp: no usable signing keys yet" in ready.body
        assert http_get(tmp_path, "/healthcheck").status == 500
        # The denial names the outage, not the client's token, and is counted so.
        token = jwt_kit.mint(KEY, scope="orders:read")
        answer = client.check(check_request(headers={"authorization": f"Bearer {token}"}))
        assert (answer.status, answer.body["error"]) == (503, "keys_unavailable")
        denied = value(scrape(port), "tollgate_authz_decisions_total",
                       {"decision": "deny", "code": "keys_unavailable", "route": "orders"})
        assert denied == 1

        idp.start()
        wait_for(lambda: client.serving("") and client.serving(SERVICE),
                 what="ready once the IdP answers")
        samples = scrape(port)
        assert (value(samples, "tollgate_authz_jwks_fetches_total",
                      {"source": "corp", "result": "ok"}) or 0) >= 1
        assert value(samples, "tollgate_authz_jwks_keys", {"source": "corp"}) == 1
        assert http_get(tmp_path, "/ready").status == 200
        healthcheck = http_get(tmp_path, "/healthcheck")
        assert (healthcheck.status, healthcheck.body) == (200, b"OK")
        assert client.check(check_request(headers={"authorization": f"Bearer {token}"})).allowed

        # Killed again after keys arrived: the errors are counted, the keys kept.
        errors_before = failed()
        idp.stop()
        wait_for(lambda: failed() > errors_before, what="fetch errors after the IdP died")
        assert value(scrape(port), "tollgate_authz_jwks_keys", {"source": "corp"}) == 1
        assert client.serving("")


def test_a_broken_config_is_counted_and_the_last_success_time_kept(
    idp: Idp, tmp_path: Path
) -> None:
    idp.start()
    config = tmp_path / "authz.yaml"
    config.write_text(policy(idp.url))
    port = free_port()
    env = {"AUTHZ_METRICS_ADDRESS": f"127.0.0.1:{port}"}
    with authz_process(config, tmp_path, env=env) as (_, client):
        samples = scrape(port)
        assert value(samples, "tollgate_authz_config_loads_total", {"result": "success"}) == 1
        assert value(samples, "tollgate_authz_config_loads_total", {"result": "error"}) == 0
        first = value(samples, "tollgate_authz_config_last_success_timestamp_seconds")
        assert first is not None and abs(first - time.time()) < 60

        config.write_text(policy(idp.url) + "  - name: [unclosed\n")
        errors = reading(port, "tollgate_authz_config_loads_total", {"result": "error"})
        wait_for(lambda: errors() == 1, what="the rejected load counted")
        samples = scrape(port)
        assert value(samples, "tollgate_authz_config_loads_total", {"result": "success"}) == 1
        assert value(samples, "tollgate_authz_config_last_success_timestamp_seconds") == first
        assert value(samples, "tollgate_authz_config_last_reload_successful") == 0

        config.write_text(policy(idp.url, route="orders-v2"))
        successes = reading(port, "tollgate_authz_config_loads_total", {"result": "success"})
        wait_for(lambda: successes() == 2, what="the good reload counted")
        samples = scrape(port)
        later = value(samples, "tollgate_authz_config_last_success_timestamp_seconds")
        assert later is not None and later > first
        assert value(samples, "tollgate_authz_config_last_reload_successful") == 1
        assert client.live()


def test_build_and_process_facts_are_exported(tmp_path: Path, idp: Idp) -> None:
    idp.start()
    config = tmp_path / "authz.yaml"
    config.write_text(policy(idp.url))
    port = free_port()
    with authz_process(config, tmp_path, env={"AUTHZ_METRICS_ADDRESS": f"127.0.0.1:{port}"}):
        text = scrape_text(port)
        samples = scrape(port)
    build = [labels for (name, labels) in samples if name == "tollgate_build_info"]
    assert len(build) == 1
    facts = dict(build[0])
    assert facts["service"] == "authz-service"
    assert facts["version"] and facts["python"].count(".") == 2
    assert (value(samples, "process_resident_memory_bytes") or 0) > 1_000_000
    assert "process_cpu_seconds_total" in text
    assert "python_gc_collections_total" in text
