"""Store settings an operator gets wrong (issue 15 item 8), against real redis-servers.

A malformed --redis-url is a one-line error, not a traceback. NOAUTH, WRONGPASS, a
closed port or a TLS certificate that does not verify keep health NOT_SERVING, with
the reason logged (they used to start SERVING and fail every call open). A password
with ':' in it works; rediss:// verifies against --redis-tls-ca-file.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from grpc_health.v1 import health_pb2

from tests.kits.ratelimit_kit import OK, descriptor, request
from tests.kits.ratelimit_proc import SERVICE, ServiceProcess
from tests.kits.redis_procs import RedisProcess, free_port
from tollgate_cli import devcerts

pytestmark = pytest.mark.integration

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "rl.yaml"
    path.write_text("domain: s\ndescriptors:\n  - key: k\n"
                    "    rate_limit: {unit: hour, requests_per_unit: 5}\n")
    return path


@pytest.fixture
def locked_redis(tmp_path: Path) -> Iterator[RedisProcess]:
    """A Redis whose default user's password contains ':', plus an ACL user alice."""
    server = RedisProcess(tmp_path, extra=["--requirepass", "pa:ss@1", "--user", "alice",
                                           "on", ">wonder:land", "~*", "&*", "+@all"])
    server.start()
    try:
        yield server
    finally:
        server.stop()


def service(config: Path, *args: str) -> ServiceProcess:
    return ServiceProcess(["--config", str(config), "--redis-timeout", "0.5", *args])


def counted(proc: ServiceProcess) -> bool:
    response = proc.call(request("s", descriptor(("k", "v"))))
    return response.overall_code == OK and response.statuses[0].HasField("current_limit")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis://127.0.0.1:notaport", "port 'notaport' is not a number in 1-65535"),
        ("redis://127.0.0.1:70000", "port '70000' is not a number in 1-65535"),
        ("redis://127.0.0.1:6379/db9", "database 'db9' is not a number"),
        ("unix://relative.sock", "unix:// needs an absolute socket path"),
    ],
)
def test_a_malformed_redis_url_is_one_line_not_a_traceback(
    config: Path, url: str, message: str
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "ratelimit_service.cli", "--config", str(config),
         "--grpc-address", "127.0.0.1:0", "--redis-url", url],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert message in done.stderr


def test_a_missing_ca_file_is_refused_at_start(config: Path, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "ratelimit_service.cli", "--config", str(config),
         "--redis-url", "rediss://127.0.0.1:6380", "--redis-tls-ca-file",
         str(tmp_path / "nope.pem")],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 2
    assert f"--redis-tls-ca-file {tmp_path / 'nope.pem'}: no such file" in done.stderr


@pytest.mark.parametrize(
    ("auth", "reason"),
    [([], "NOAUTH"), (["--redis-auth", "wrong"], "WRONGPASS"),
     (["--redis-auth", "pa"], "WRONGPASS")],
)
def test_bad_credentials_keep_health_not_serving_with_the_reason(
    config: Path, locked_redis: RedisProcess, auth: list[str], reason: str
) -> None:
    proc = service(config, "--redis-url", locked_redis.url, *auth)
    try:
        entry = proc.wait_log(lambda e: e.get("msg") == "counter store not ready")
        assert reason in str(entry["error"])
        assert (proc.health(), proc.health(SERVICE)) == (NOT_SERVING, NOT_SERVING)
    finally:
        proc.stop()


def test_a_closed_port_is_not_ready_until_redis_comes(config: Path, tmp_path: Path) -> None:
    port = free_port()
    proc = service(config, "--redis-url", f"redis://127.0.0.1:{port}")
    try:
        entry = proc.wait_log(lambda e: e.get("msg") == "counter store not ready")
        assert "connection refused" in str(entry["error"]).lower()
        assert proc.health() == NOT_SERVING
        late = RedisProcess(tmp_path, port=port)
        late.start()
        try:
            proc.wait_health(SERVING)
            assert counted(proc)
        finally:
            late.stop()
    finally:
        proc.stop()


@pytest.mark.parametrize(
    "auth",
    [["--redis-auth", ":pa:ss@1"], ["--redis-username", "alice", "--redis-auth", "wonder:land"],
     ["--redis-auth", "alice:wonder:land"]],
)
def test_passwords_with_colons_authenticate(
    config: Path, locked_redis: RedisProcess, auth: list[str]
) -> None:
    proc = service(config, "--redis-url", locked_redis.url, *auth)
    try:
        proc.wait_health(SERVING)
        assert counted(proc)
    finally:
        proc.stop()


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[tuple[RedisProcess, devcerts.DevCerts]]:
    certs = devcerts.ensure(tmp_path / "certs")
    port = free_port()
    server = RedisProcess(tmp_path, port=free_port(), extra=[
        "--tls-port", str(port), "--tls-cert-file", str(certs.server_cert),
        "--tls-key-file", str(certs.server_key), "--tls-ca-cert-file", str(certs.ca),
        "--tls-auth-clients", "no",
    ])
    server.start()
    try:
        yield RedisProcess(tmp_path, port=port), certs
    finally:
        server.stop()


def test_rediss_verifies_against_the_ca_file(
    config: Path, tls_redis: tuple[RedisProcess, devcerts.DevCerts]
) -> None:
    server, certs = tls_redis
    url = f"rediss://127.0.0.1:{server.port}"
    untrusted = service(config, "--redis-url", url)
    try:
        entry = untrusted.wait_log(lambda e: e.get("msg") == "counter store not ready")
        assert "certificate verify failed" in str(entry["error"])
        assert untrusted.health() == NOT_SERVING
    finally:
        untrusted.stop()
    trusted = service(config, "--redis-url", url, "--redis-tls-ca-file", str(certs.ca))
    try:
        trusted.wait_health(SERVING)
        assert counted(trusted)
    finally:
        trusted.stop()
