"""Each service's flags become one typed settings value, refused once, at start, by flag."""

from __future__ import annotations

from pathlib import Path

import pytest

from authz_service.cli import build_parser as authz_parser
from authz_service.settings import DEFAULT_CONFIG, AuthzSettings
from ratelimit_service.cli import build_parser as ratelimit_parser
from ratelimit_service.limiter import FailureMode
from ratelimit_service.settings import DEFAULT_ADDRESS, RateLimitSettings
from tollgate.settings import SettingsError


@pytest.fixture(autouse=True)
def _shipped_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AUTHZ_HTTP_ADDRESS", raising=False)  # tests/conftest.py sets it


def authz(*flags: str) -> AuthzSettings:
    return AuthzSettings.from_args(authz_parser().parse_args(flags))


def ratelimit(*flags: str, env: dict[str, str] | None = None) -> RateLimitSettings:
    return RateLimitSettings.from_args(ratelimit_parser().parse_args(flags), env or {})


def test_authz_defaults_serve_both_doors_on_loopback_with_the_embedded_policy() -> None:
    settings = authz()
    assert settings.config == DEFAULT_CONFIG
    assert settings.grpc_address == "127.0.0.1:9191"
    assert settings.http is not None and settings.http.address == "127.0.0.1:9192"
    assert settings.http.forwarding is None  # nothing forwarded is believed by default
    assert settings.limits.store.url == "" and settings.dpop_replay.url == ""
    assert (settings.decision_log.to, settings.decision_log.otlp_endpoint) == (None, "")
    assert settings.common.tls is None and settings.common.metrics_address == ""


def test_authz_limit_store_reads_the_same_store_settings_as_ratelimit_service() -> None:
    store = authz("--limits-redis-url", "redis://127.0.0.1:1", "--limits-redis-username",
                  "tollgate", "--limits-redis-pipeline-window", "1ms",
                  "--limits-redis-pipeline-limit", "64").limits.store
    assert (store.username, store.pipeline_window, store.pipeline_limit) == \
        ("tollgate", pytest.approx(0.001), 64)
    assert store == ratelimit("--redis-url", "redis://127.0.0.1:1", "--redis-username",
                              "tollgate", "--redis-pipeline-window", "1ms",
                              "--redis-pipeline-limit", "64", "--redis-timeout", "0.25",
                              "--local-cache-size-bytes", str(store.local_cache_bytes),
                              "--memory-max-keys", "1000000").store


def test_a_door_switched_off_is_none_and_both_off_is_refused() -> None:
    assert authz("--grpc-address", "off").grpc_address is None
    assert authz("--http-address", "off").http is None
    with pytest.raises(SettingsError, match="both off: nothing to serve"):
        authz("--grpc-address", "off", "--http-address", "off")


@pytest.mark.parametrize(("flags", "names"), [
    (("--grpc-address", "nowhere"), "--grpc-address"),
    (("--http-path-prefix", "check/"), "--http-path-prefix"),
    (("--http-trusted-forwarders", "10.0.0.0/8"), "--http-trusted-forwarders"),
    (("--http-forwarded", "nginx", "--http-trusted-forwarders", "not-a-cidr"),
     "--http-trusted-forwarders"),
    (("--http-forwarded", "nginx", "--http-address", "off"), "--http-forwarded"),
    (("--limits-redis-url", "http://127.0.0.1:1"), "--limits-redis-url"),
    (("--limits-redis-timeout", "0"), "--limits-redis-timeout"),
    (("--limits-redis-pipeline-window", "soon"), "--limits-redis-pipeline-window"),
    (("--limits-redis-pipeline-window", "2s"), "--limits-redis-pipeline-window"),
    (("--limits-redis-tls-ca-file", "/nonexistent/ca.pem"), "--limits-redis-tls-ca-file"),
    (("--dpop-replay-redis-url", "http://127.0.0.1:1"), "--dpop-replay-redis-url"),
    (("--dpop-replay-memory-max-entries", "0"), "--dpop-replay-memory-max-entries"),
    (("--limits-memory-max-keys", "0"), "--limits-memory-max-keys"),
    (("--decision-log-claims", "a..b"), "--decision-log-claims"),
    (("--decision-log-allow-sample-rate", "1.5"), "--decision-log-allow-sample-rate"),
    (("--decision-log-queue", "0"), "--decision-log-queue"),
    (("--tls-key", "k.pem"), "--tls-cert"),
    (("--reload-interval", "0"), "--reload-interval"),
    (("--drain-announce-seconds", "-1"), "--drain-announce-seconds"),
])
def test_authz_refuses_each_unusable_setting_naming_its_flag(
        flags: tuple[str, ...], names: str) -> None:
    with pytest.raises(SettingsError) as refused:
        authz(*flags)
    assert str(refused.value).startswith(names), str(refused.value)


def test_authz_a_refused_setting_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    from authz_service.cli import main

    with pytest.raises(SystemExit) as exited:
        main(["--limits-redis-url", "http://127.0.0.1:1"])
    assert exited.value.code == 2
    assert "--limits-redis-url: " in capsys.readouterr().err


def test_ratelimit_defaults_and_the_reference_environment_names() -> None:
    settings = ratelimit()
    assert settings.address == DEFAULT_ADDRESS and settings.health_address == ""
    assert settings.failure_mode is FailureMode.OPEN and settings.workers == 1
    assert settings.rules.path is None  # the embedded default rules
    moved = ratelimit(env={"GRPC_PORT": "9000", "PORT": "8080", "RUNTIME_ROOT": "/srv",
                           "RUNTIME_SUBDIRECTORY": "ratelimit", "USE_PROMETHEUS": "true"})
    assert moved.address == "127.0.0.1:9000" and moved.health_address == "0.0.0.0:8080"
    assert moved.rules.path == str(Path("/srv", "ratelimit", "config"))
    assert moved.common.metrics_address != ""


def test_ratelimit_reads_the_store_and_decision_flags_once() -> None:
    settings = ratelimit("--redis-pipeline-window", "500us", "--store-failure-mode", "closed",
                         "--response-headers", "--near-limit-ratio", "0.5",
                         "--log-level", "WARN")
    assert settings.store.pipeline_window == pytest.approx(0.0005)
    assert settings.failure_mode is FailureMode.CLOSED
    assert settings.decision.headers is not None and settings.decision.near_limit_ratio == 0.5
    assert settings.common.log_level == "warning"  # the reference's LOG_LEVEL spelling


@pytest.mark.parametrize(("flags", "names"), [
    (("--grpc-address", "nowhere"), "'nowhere'"),
    (("--redis-url", "http://127.0.0.1:1"), "--redis-url: "),
    (("--near-limit-ratio", "1.5"), "--near-limit-ratio"),
    (("--memory-max-keys", "0"), "--memory-max-keys"),
    (("--redis-pipeline-window", "soon"), "--redis-pipeline-window"),
    (("--redis-pipeline-window", "2s"), "--redis-pipeline-window"),
    (("--redis-tls-ca-file", "/nonexistent/ca.pem"), "--redis-tls-ca-file"),
    (("--redis-type", "ring", "--redis-url", "10.0.0.1:6379"), "--redis-url: "),
    (("--memory-max-bytes", "0"), "--memory-max-bytes 0: at least 1"),
    (("--redis-timeout", "0"), "--redis-timeout 0.0: must be above 0"),
    (("--workers", "0"), "--workers"),
    (("--log-level", "loud"), "--log-level"),
    (("--log-format", "xml"), "--log-format"),
    (("--admin-address", "nowhere:port"), "nowhere:port"),
])
def test_ratelimit_refuses_each_unusable_setting(flags: tuple[str, ...], names: str) -> None:
    with pytest.raises(SettingsError) as refused:
        ratelimit(*flags)
    assert names in str(refused.value), str(refused.value)


def test_an_announce_longer_than_the_drain_still_starts_and_is_cut_to_it_at_stop() -> None:
    common = authz("--drain-seconds", "0.5").common
    assert (common.drain_seconds, common.drain_announce_seconds) == (0.5, 1.0)


@pytest.mark.parametrize(("given", "level"), [
    ("fatal", "critical"), ("panic", "critical"), ("trace", "debug"), ("CRITICAL", "critical"),
])
def test_the_reference_log_levels_are_read_by_both_services(given: str, level: str) -> None:
    assert ratelimit("--log-level", given).common.log_level == level
    assert authz("--log-level", given).common.log_level == level


def test_an_environment_value_outside_a_flags_choices_is_refused_by_name(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RATELIMIT_STORE_FAILURE_MODE", "Closed")
    with pytest.raises(SystemExit, match=r"^\$RATELIMIT_STORE_FAILURE_MODE: one of open, "
                                         r"closed, got 'Closed'$"):
        ratelimit_parser()


def test_check_config_reads_the_rules_alone(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    """As before the settings were typed: a migrated environment whose other settings
    this service would refuse can still check its rules and policy."""
    from authz_service.cli import main as authz_main
    from ratelimit_service.cli import main as ratelimit_main

    rules = tmp_path / "rules.yaml"
    rules.write_text("domain: d\ndescriptors:\n  - key: k\n"
                     "    rate_limit: {unit: second, requests_per_unit: 1}\n")
    monkeypatch.setenv("REDIS_TLS_CACERT", "/nonexistent/ca.pem")
    monkeypatch.setenv("GRPC_PORT", "not-a-port")
    assert ratelimit_main(["--check-config", str(rules)]) == 0
    monkeypatch.setenv("AUTHZ_LIMITS_REDIS_URL", "http://127.0.0.1:1")
    assert authz_main(["--check-config", str(DEFAULT_CONFIG)]) == 0
    assert "ok" in capsys.readouterr().out
