"""What an on-call engineer sees of a real ratelimit-service: /metrics under our names
and envoyproxy/ratelimit's, config loads, a killed Redis, the reference's settings and
its HTTP /healthcheck."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import pytest
from envoy.service.ratelimit.v3 import rls_pb2

from tests.kits.metrics_kit import reading, scrape, value
from tests.kits.processes import free_port, wait_for
from tests.kits.ratelimit_kit import descriptor, request
from tests.kits.ratelimit_proc import ServiceProcess
from tests.kits.redis_procs import RedisProcess

pytestmark = pytest.mark.integration

CONFIG = """domain: shop
descriptors:
  - key: remote_address
    rate_limit: {unit: hour, requests_per_unit: 2}
  - key: plan
    value: free
    descriptors:
      - key: path
        rate_limit: {unit: hour, requests_per_unit: 1}
"""


def started(args: list[str], env: dict[str, str]) -> ServiceProcess:
    return ServiceProcess(args, env=env)


def test_reference_names_beside_ours_and_config_loads_counted(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG)
    port = free_port()
    proc = started(["--config", str(config), "--reload-interval", "0.05"],
                   {"RATELIMIT_METRICS_ADDRESS": f"127.0.0.1:{port}"})
    try:
        for _ in range(3):
            proc.call(request("shop", descriptor(("remote_address", "10.0.0.1"))))
        for _ in range(2):
            proc.call(request("shop", descriptor(("plan", "free"), ("path", "/a"))))
        samples = scrape(port)
        one = {"domain": "shop", "key1": "remote_address"}
        assert value(samples, "ratelimit_service_rate_limit_total_hits", one) == 3
        assert value(samples, "ratelimit_service_rate_limit_over_limit", one) == 1
        assert value(samples, "ratelimit_service_rate_limit_within_limit", one) == 2
        two = {"domain": "shop", "key1": "plan_free", "key2": "path"}
        assert value(samples, "ratelimit_service_rate_limit_total_hits", two) == 2
        assert value(samples, "ratelimit_service_rate_limit_over_limit", two) == 1
        # ... and ours, from the same counters.
        assert value(samples, "tollgate_ratelimit_rule_hits_total",
                     {"key": "shop.remote_address", "stat": "over_limit"}) == 1
        assert value(samples, "ratelimit_service_config_load_success") == 1
        assert value(samples, "ratelimit_service_config_load_error") == 0
        assert value(samples, "tollgate_ratelimit_config_loads_total", {"result": "success"}) == 1
        first = value(samples, "tollgate_ratelimit_config_last_success_timestamp_seconds")
        assert first is not None and abs(first - time.time()) < 60
        assert [dict(labels)["service"] for name, labels in samples
                if name == "tollgate_build_info"] == ["ratelimit-service"]

        config.write_text(CONFIG + "  - key: [broken\n")
        wait_for(lambda: reading(port, "ratelimit_service_config_load_error")() == 1,
                 what="the rejected reload counted under the reference's name")
        samples = scrape(port)
        assert value(samples, "tollgate_ratelimit_config_loads_total", {"result": "error"}) == 1
        assert value(samples, "tollgate_ratelimit_config_last_success_timestamp_seconds") == first
        assert value(samples, "tollgate_ratelimit_config_last_reload_successful") == 0
        config.write_text(CONFIG.replace("requests_per_unit: 2", "requests_per_unit: 5"))
        wait_for(lambda: reading(port, "ratelimit_service_config_load_success")() == 2,
                 what="the good reload counted")
        later = value(scrape(port), "tollgate_ratelimit_config_last_success_timestamp_seconds")
        assert later is not None and later > first
    finally:
        proc.stop()


@pytest.mark.parametrize("mode", ["open", "closed"])
def test_a_killed_redis_counts_store_errors_and_each_failure_decision(
    tmp_path: Path, redis_server: RedisProcess, mode: str
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG)
    port, health_port = free_port(), free_port()
    proc = started(["--config", str(config), "--redis-url", redis_server.url,
                    "--redis-timeout", "0.3", "--store-failure-mode", mode,
                    "--health-address", f"127.0.0.1:{health_port}"],
                   {"RATELIMIT_METRICS_ADDRESS": f"127.0.0.1:{port}"})
    try:
        hit = request("shop", descriptor(("remote_address", "10.0.0.9")))
        assert proc.call(hit).overall_code == rls_pb2.RateLimitResponse.OK
        samples = scrape(port)
        assert (value(samples, "tollgate_store_round_trip_seconds_count") or 0) >= 1
        assert value(samples, "tollgate_store_errors_total", {"store": "redis"}) == 0
        assert healthcheck(health_port) == (200, b"OK")

        redis_server.stop()
        for _ in range(3):
            if mode == "open":
                assert proc.call(hit).overall_code == rls_pb2.RateLimitResponse.OK
            else:
                with pytest.raises(grpc.RpcError) as refused:
                    proc.call(hit)
                assert refused.value.code() is grpc.StatusCode.UNAVAILABLE
        samples = scrape(port)
        assert (value(samples, "tollgate_store_errors_total", {"store": "redis"}) or 0) >= 3
        outcome = "failed_open" if mode == "open" else "store_unavailable"
        assert value(samples, "tollgate_ratelimit_decisions_total", {"outcome": outcome}) == 3
        assert value(samples, "ratelimit_service_should_rate_limit_error",
                     {"err_type": "redis_error"}) == 3
        if mode == "closed":  # readiness follows the store: the reference's probe sees it
            wait_for(lambda: healthcheck(health_port)[0] == 500, what="/healthcheck 500")
        else:
            assert healthcheck(health_port) == (200, b"OK")
    finally:
        proc.stop()


def healthcheck(port: int) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthcheck", timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def test_reference_settings_prometheus_port_and_warnings(tmp_path: Path) -> None:
    metrics_port, http_port = free_port(), free_port()
    proc = started(["--drain-announce-seconds", "3"], {
        "USE_PROMETHEUS": "true", "PROMETHEUS_ADDR": f"127.0.0.1:{metrics_port}",
        "PORT": str(http_port), "HOST": "127.0.0.1",
        "USE_STATSD": "true", "BACKEND_TYPE": "memcache", "CONFIG_TYPE": "GRPC_XDS",
        "USE_DOG_STATSD": "false",
    })
    try:
        warned = {str(entry["setting"]) for entry in proc.logs
                  if entry.get("msg") == "reference setting not implemented, ignored"}
        assert warned == {"USE_STATSD=true", "BACKEND_TYPE=memcache", "CONFIG_TYPE=GRPC_XDS"}
        assert value(scrape(metrics_port), "ratelimit_service_config_load_success") == 1
        assert healthcheck(http_port) == (200, b"OK")
        proc.proc.send_signal(15)  # SIGTERM: the drain announces itself on the probe too
        wait_for(lambda: healthcheck(http_port)[0] == 500, timeout=5,
                 what="/healthcheck 500 while draining")
    finally:
        proc.stop()


def test_reference_settings_are_read_as_the_reference_reads_them() -> None:
    from ratelimit_service.reference_env import prometheus_address, unsupported
    from ratelimit_service.settings import resolve_health_address, resolve_metrics_address

    # Go's ParseBool: "True" and "1" are true, "yes" is not.
    assert prometheus_address({"USE_PROMETHEUS": "True"}) == ":9090"
    assert prometheus_address({"USE_PROMETHEUS": "1", "PROMETHEUS_ADDR": "0.0.0.0:9102"}) \
        == "0.0.0.0:9102"
    assert prometheus_address({"USE_PROMETHEUS": "yes"}) == ""
    assert prometheus_address({"PROMETHEUS_ADDR": ":9102"}) == ""
    assert resolve_metrics_address("127.0.0.1:1", {"USE_PROMETHEUS": "true"}) == "127.0.0.1:1"
    # Set to what we do anyway, or off: no warning.
    assert unsupported({"USE_STATSD": "false", "BACKEND_TYPE": "redis", "CONFIG_TYPE": "FILE",
                        "PROMETHEUS_PATH": "/metrics"}) == []
    assert [s for s, _ in unsupported({"PROMETHEUS_PATH": "/stats", "REDIS_PERSECOND": "t"})] \
        == ["REDIS_PERSECOND=t", "PROMETHEUS_PATH=/stats"]
    assert resolve_health_address("", {"PORT": "8080"}) == "0.0.0.0:8080"
    assert resolve_health_address("", {"PORT": "8080", "HOST": "127.0.0.1"}) == "127.0.0.1:8080"
    assert resolve_health_address("", {}) == ""
    with pytest.raises(ValueError, match="not HOST:PORT"):
        resolve_health_address("", {"PORT": "http"})
