"""The `ratelimit-service` command as a process: health, reflection, reload, env vars."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from ratelimit_service.cli import build_parser
from ratelimit_service.settings import resolve_address, resolve_config_path
from ratelimit_service.stores.target import TargetError, parse_target
from tests.kits.ratelimit_kit import EMPTY_DIRECTORY, OK, OVER, descriptor, request
from tests.kits.ratelimit_proc import ServiceProcess

pytestmark = pytest.mark.integration  # real processes: redis-server, Envoy, the service

SERVICE = "envoy.service.ratelimit.v3.RateLimitService"


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "config"
    directory.mkdir()
    (directory / "a.yaml").write_text(
        "domain: a\ndescriptors:\n  - key: k\n    rate_limit: {unit: hour, requests_per_unit: 1}\n"
    )
    (directory / "b.yaml").write_text("domain: b\n")
    return directory


@pytest.fixture
def service(config_dir: Path) -> Iterator[ServiceProcess]:
    proc = ServiceProcess(["--config", str(config_dir), "--reload-interval", "0.05"])
    try:
        yield proc
    finally:
        proc.stop()


def test_serves_health_reflection_and_decisions(service: ServiceProcess) -> None:
    health = health_pb2_grpc.HealthStub(service.channel)
    for name in ("", SERVICE):
        status = health.Check(health_pb2.HealthCheckRequest(service=name), timeout=10).status
        assert status == health_pb2.HealthCheckResponse.SERVING
    reflection = reflection_pb2_grpc.ServerReflectionStub(service.channel)
    answers = reflection.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10
    )
    names = {s.name for answer in answers for s in answer.list_services_response.service}
    assert SERVICE in names
    req = request("a", descriptor(("k", "v")))
    assert [service.call(req).overall_code for _ in range(2)] == [OK, OVER]


def test_hot_reload_swaps_valid_and_keeps_the_last_good(
    service: ServiceProcess, config_dir: Path
) -> None:
    (config_dir / "b.yaml").write_text(
        "domain: b\ndescriptors:\n  - key: k\n    rate_limit: {unit: hour, requests_per_unit: 2}\n"
    )
    service.wait_log(lambda e: e.get("msg") == "config reloaded")
    req = request("b", descriptor(("k", "v")))
    assert [service.call(req).overall_code for _ in range(3)] == [OK, OK, OVER]
    (config_dir / "b.yaml").write_text("domain: b\ndescriptors:\n  - key: k\n    bad: 1\n")
    rejected = service.wait_log(lambda e: e.get("msg", "").startswith("config reload rejected"))  # type: ignore[attr-defined]
    assert rejected["error"] == f"{config_dir / 'b.yaml'}:4: descriptors[0].bad: unknown key 'bad'"
    assert service.call(req).statuses[0].current_limit.requests_per_unit == 2
    assert service.stop() == 0


def test_starts_with_no_arguments_on_the_embedded_default() -> None:
    proc = ServiceProcess([])
    try:
        free = request("tollgate", descriptor(("plan", "free"), ("subject", "alice")),
                       descriptor(("remote_address", "10.1.2.3")))
        codes = [proc.call(free).overall_code for _ in range(6)]
        assert codes == [OK] * 5 + [OVER]
        gold = request("tollgate", descriptor(("plan", "gold"), ("subject", "alice")))
        assert proc.call(gold).statuses[0].current_limit.requests_per_unit == 600
        started = proc.wait_log(lambda e: e.get("msg") == "starting")
        assert started["store"] == "memory"
    finally:
        assert proc.stop() == 0


def test_reference_environment_variables(tmp_path: Path, config_dir: Path) -> None:
    runtime = tmp_path / "runtime"
    (runtime / "ratelimit").mkdir(parents=True)
    (runtime / "ratelimit" / "config").symlink_to(config_dir)
    proc = ServiceProcess([], env={
        "RUNTIME_ROOT": str(runtime), "RUNTIME_SUBDIRECTORY": "ratelimit",
        "LIMIT_RESPONSE_HEADERS_ENABLED": "true", "LIMIT_REMAINING_HEADER": "RateLimit-Remaining",
        "SHADOW_MODE": "true", "LOG_LEVEL": "INFO",
    })
    try:
        req = request("a", descriptor(("k", "v")))
        first, second = proc.call(req), proc.call(req)
        assert ("RateLimit-Remaining", "0") in [
            (h.key, h.value) for h in first.response_headers_to_add
        ]
        assert second.overall_code == OK  # global shadow mode
        assert second.statuses[0].code == OVER
    finally:
        proc.stop()


def test_address_and_config_resolution_follow_the_reference_names() -> None:
    assert resolve_address(None, {}) == "127.0.0.1:8081"
    assert resolve_address(None, {"GRPC_PORT": "9000"}) == "127.0.0.1:9000"
    assert resolve_address(None, {"GRPC_HOST": "::1", "GRPC_PORT": "1"}) == "::1:1"
    assert resolve_address(None, {"GRPC_UDS": "/tmp/rl.sock"}) == "unix:/tmp/rl.sock"
    assert resolve_address("unix:/x.sock", {"GRPC_PORT": "1"}) == "unix:/x.sock"
    assert resolve_config_path(None, {}) is None
    assert resolve_config_path(None, {"RUNTIME_ROOT": "/srv", "RUNTIME_SUBDIRECTORY": "rl"}) == (
        "/srv/rl/config"
    )
    assert resolve_config_path("x.yaml", {"RUNTIME_ROOT": "/srv"}) == "x.yaml"


def test_flags_read_reference_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "10.0.0.1:6379,10.0.0.2:6379")
    monkeypatch.setenv("REDIS_TYPE", "cluster")
    monkeypatch.setenv("NEAR_LIMIT_RATIO", "0.5")
    monkeypatch.setenv("LOCAL_CACHE_SIZE_IN_BYTES", "0")
    monkeypatch.setenv("CACHE_KEY_PREFIX", "rl:")
    args = build_parser().parse_args([])
    assert (args.redis_url, args.redis_type) == ("10.0.0.1:6379,10.0.0.2:6379", "cluster")
    assert (args.near_limit_ratio, args.local_cache_size_bytes) == (0.5, 0)
    assert args.cache_key_prefix == "rl:"
    assert build_parser().parse_args(["--near-limit-ratio", "0.9"]).near_limit_ratio == 0.9


@pytest.mark.parametrize(
    ("url", "kwargs", "kind", "detail"),
    [
        ("", {}, "memory", ""),
        ("redis://127.0.0.1:6380/2", {}, "single", "redis://127.0.0.1:6380/2"),
        ("rediss://h:1", {}, "single", "rediss://h:1"),
        ("unix:///run/redis.sock", {}, "single", "unix:///run/redis.sock"),
        ("127.0.0.1:6379", {"socket_type": "tcp"}, "single", "redis://127.0.0.1:6379"),
        ("/var/run/redis.sock", {"socket_type": "unix"}, "single", "unix:///var/run/redis.sock"),
        ("h:1", {"auth": "pw"}, "single", "redis://:pw@h:1"),
        ("h:1", {"auth": "user:pw", "tls": True}, "single", "rediss://user:pw@h:1"),
        ("redis+cluster://a:1,b:2", {}, "cluster", "a:1,b:2"),
        ("a:1,b:2", {"redis_type": "CLUSTER"}, "cluster", "a:1,b:2"),
        ("redis+sentinel://s1:26379,s2:26379/mymaster", {}, "sentinel",
         "mymaster@s1:26379,s2:26379"),
        ("mymaster,s1:26379", {"redis_type": "sentinel"}, "sentinel", "mymaster@s1:26379"),
    ],
)
def test_store_targets(url: str, kwargs: dict[str, object], kind: str, detail: str) -> None:
    target = parse_target(url, **kwargs)  # type: ignore[arg-type]
    assert target.kind == kind
    if kind == "single":
        assert target.url == detail
    elif kind == "cluster":
        assert ",".join(f"{h}:{p}" for h, p in target.nodes) == detail
    elif kind == "sentinel":
        nodes = ",".join(f"{h}:{p}" for h, p in target.nodes)
        assert f"{target.master}@{nodes}" == detail


@pytest.mark.parametrize(
    ("url", "kwargs"),
    [
        ("memcache://x:1", {}),
        ("redis+sentinel://s1:1", {}),
        ("h:notaport", {}),
        ("x:1", {"redis_type": "ring"}),
        ("mymaster", {"redis_type": "sentinel"}),
    ],
)
def test_bad_store_targets(url: str, kwargs: dict[str, object]) -> None:
    with pytest.raises(TargetError):
        parse_target(url, **kwargs)  # type: ignore[arg-type]


def test_an_empty_config_directory_is_refused_at_start_and_on_reload(
    tmp_path: Path, config_dir: Path
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    done = subprocess.run(
        [sys.executable, "-m", "ratelimit_service.cli", "--config", str(empty)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 1
    assert done.stderr.strip() == f"{empty}: {EMPTY_DIRECTORY}"
    allowed = ServiceProcess(["--config", str(empty), "--allow-empty-config"])
    try:
        assert allowed.wait_log(lambda e: e.get("msg") == "starting")["domains"] == []
    finally:
        assert allowed.stop() == 0
    live = ServiceProcess(["--config", str(config_dir), "--reload-interval", "0.05"])
    try:
        req = request("a", descriptor(("k", "v")))
        assert live.call(req).overall_code == OK
        for name in ("a.yaml", "b.yaml"):  # the ConfigMap lost its files
            (config_dir / name).rename(config_dir / f"{name}.old")
        rejected = live.wait_log(
            lambda e: str(e.get("msg", "")).startswith("config reload rejected"))
        assert rejected["error"] == f"{config_dir}: {EMPTY_DIRECTORY}"
        assert live.call(req).overall_code == OVER  # the last good limits still apply
    finally:
        live.stop()


def test_durations_read_as_the_reference_writes_them() -> None:
    from tollgate.settings import duration

    assert [duration(t) for t in ("0", "150us", "1ms", "0.5ms", "2s", "0.25")] == [
        0.0, 150e-6, 1e-3, 0.5e-3, 2.0, 0.25]
    with pytest.raises(ValueError, match="'fast' is not a duration such as 500us, 1ms or 0"):
        duration("fast")
