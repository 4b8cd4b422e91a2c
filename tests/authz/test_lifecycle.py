"""The authz-service command-line contract: check-config, env vars, health and
reflection, hot reload (file edit, ConfigMap symlink swap, SIGHUP) and SIGTERM drain.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from authz_service.settings import DEFAULT_CONFIG
from tests.kits import jwt_kit
from tests.kits.grpc_kit import AuthzClient, check_request
from tests.kits.http_kit import HttpServer, Route, serve_http
from tests.kits.processes import binary, free_port, stays_false, stop_process, wait_for

pytestmark = pytest.mark.integration  # every test here starts the service

BASE = """realm: t
identities:
  - name: idp
    jwt:
      issuer: https://issuer.test
      audiences: [orders]
      jwks_uri: https://issuer.test/jwks
routes:
  - name: r
    match: {path: {prefix: /}}
    identities: [idp]
"""

BROKEN = {
    "unknown_key": (
        BASE.replace("realm: t\n", "realm: t\nbogus: 1\n"),
        "2: bogus: unknown key 'bogus'",
    ),
    "bad_algorithm": (
        BASE.replace("jwks_uri: https://issuer.test/jwks\n",
                     "jwks_uri: https://issuer.test/jwks\n      algorithms: [RS1]\n"),
        "8: identities[0].jwt.algorithms: algorithm 'RS1' is not supported "
        "(allowed: ES256, ES384, ES512, EdDSA, HS256, HS384, HS512, PS256, PS384, PS512, "
        "RS256, RS384, RS512)",
    ),
    "hs_without_secret": (
        BASE.replace("jwks_uri: https://issuer.test/jwks", "algorithms: [HS256]"),
        "4: identities[0].jwt: HS* algorithms need an explicit 'shared_secret_env'",
    ),
    "unknown_identity_source": (
        BASE.replace("identities: [idp]", "identities: [nobody]"),
        "11: routes[0].identities[0]: unknown identity source 'nobody'",
    ),
    "duplicate_route": (
        BASE + "  - name: r\n    match: {path: {prefix: /x}}\n    identities: [idp]\n",
        "12: routes[1].name: duplicate route name 'r'",
    ),
    "yaml_syntax": (
        BASE.replace("identities: [idp]", "identities: [idp"),
        "12: invalid YAML: expected ',' or ']', but got '<stream end>'",
    ),
    "duplicate_yaml_key": (
        BASE.replace("realm: t\n", "realm: t\nrealm: u\n"),
        "2: duplicate key 'realm'",
    ),
}


def run_cli(*args: str, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(args), capture_output=True, text=True, timeout=30, check=False,
        env={**os.environ, **(env or {})},
    )


def test_check_config_accepts_the_embedded_default() -> None:
    result = run_cli(binary("authz-service"), "--check-config", str(DEFAULT_CONFIG))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        f"{DEFAULT_CONFIG}: ok (2 identity sources, 6 routes, 2 rate-limit sets)")


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_check_config_names_file_line_and_reason(case: str, tmp_path: Path) -> None:
    text, expected = BROKEN[case]
    path = tmp_path / f"{case}.yaml"
    path.write_text(text)
    for command in (
        [binary("authz-service"), "--check-config", str(path)],
        [binary("tollgate"), "check-config", "authz", str(path)],
    ):
        result = run_cli(*command)
        assert result.returncode == 1
        assert result.stderr.strip() == f"{path}:{expected}"
    if case != "unknown_key":
        return
    # the variable works as well as the flag (one case is enough)
    result = run_cli(binary("authz-service"), env={"AUTHZ_CHECK_CONFIG": str(path)})
    assert result.returncode == 1
    assert result.stderr.strip() == f"{path}:{expected}"


def test_check_config_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"
    result = run_cli(binary("authz-service"), "--check-config", str(path))
    assert result.returncode == 1
    assert result.stderr.strip() == f"{path}: file not found"
    result = run_cli(binary("tollgate"), "check-config", "authz", str(path))
    assert result.returncode == 1
    assert result.stderr.strip() == f"{path}: file not found"


def test_tollgate_check_config_accepts_the_default() -> None:
    result = run_cli(binary("tollgate"), "check-config", "authz", str(DEFAULT_CONFIG))
    assert result.returncode == 0, result.stderr
    assert "ok" in result.stdout


def test_unusable_address_is_a_usage_error(tmp_path: Path) -> None:
    result = run_cli(binary("authz-service"), "--grpc-address", "nonsense")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "authz-service: error: --grpc-address/AUTHZ_GRPC_ADDRESS: "
        "address 'nonsense' is not HOST:PORT or unix:PATH"
    )


def test_taken_port_and_invalid_config_exit_1_with_one_log_line(tmp_path: Path) -> None:
    config = tmp_path / "authz.yaml"
    config.write_text(ANON.format(path="/a"))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        result = run_cli(binary("authz-service"), "--config", str(config),
                         "--grpc-address", address)
    assert result.returncode == 1
    # grpc's C core adds its own (non-JSON) line about the bind
    lines = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    assert lines[-1]["msg"] == "cannot serve"
    assert lines[-1]["error"] == f"cannot bind {address}"
    config.write_text(ANON.format(path="/a") + "bogus: 1\n")
    result = run_cli(binary("authz-service"), "--config", str(config),
                     "--grpc-address", f"unix:{tmp_path / 's.sock'}")
    assert result.returncode == 1
    last = json.loads(result.stderr.splitlines()[-1])
    assert last["msg"] == "invalid config"
    assert last["error"] == f"{config}:6: bogus: unknown key 'bogus'"


# --- the serving process ------------------------------------------------------------

ANON = """realm: t
routes:
  - name: open
    match: {{path: {{exact: {path}}}}}
    anonymous: true
"""


@contextmanager
def service(
    workdir: Path,
    args: list[str],
    env: Mapping[str, str] | None = None,
    address: str | None = None,
) -> Iterator[tuple[subprocess.Popen[bytes], AuthzClient, Path]]:
    """Run authz-service with these args; yield once health is SERVING on `address`."""
    address = address or f"unix:{workdir / 'authz.sock'}"
    log_path = workdir / "authz.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [binary("authz-service"), *args],
            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
        )
    client = AuthzClient(address)
    try:
        wait_for(lambda: proc.poll() is not None or client.live(), timeout=20,
                 what="authz-service live")
        assert proc.poll() is None, log_path.read_text()
        yield proc, client, log_path
    finally:
        client.close()
        stop_process(proc)


def allowed(client: AuthzClient, path: str) -> bool:
    return client.check(check_request(path=path)).allowed


def test_env_vars_tcp_address_health_and_reflection(tmp_path: Path) -> None:
    config = tmp_path / "authz.yaml"
    config.write_text(ANON.format(path="/a"))
    address = f"127.0.0.1:{free_port()}"
    env = {"AUTHZ_CONFIG": str(config), "AUTHZ_GRPC_ADDRESS": address,
           "AUTHZ_LOG_FORMAT": "text", "AUTHZ_RELOAD_INTERVAL": "0.05"}
    with service(tmp_path, [], env=env, address=address) as (_, client, log_path):
        assert allowed(client, "/a")
        assert not allowed(client, "/b")
        stub = reflection_pb2_grpc.ServerReflectionStub(client.channel)
        replies = stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
        )
        names = {s.name for r in replies for s in r.list_services_response.service}
        assert {
            "envoy.service.auth.v3.Authorization",
            "grpc.health.v1.Health",
            "grpc.reflection.v1alpha.ServerReflection",
        } <= names
        # AUTHZ_LOG_FORMAT=text: not JSON lines
        wait_for(lambda: log_path.read_text().strip() != "", what="a log line")
        first = log_path.read_text().splitlines()[0]
        with pytest.raises(ValueError):
            json.loads(first)
        # AUTHZ_RELOAD_INTERVAL took effect: an edit is seen quickly
        config.write_text(ANON.format(path="/b"))
        wait_for(lambda: allowed(client, "/b"), timeout=5, what="reload")


def test_hot_reload_valid_swaps_invalid_keeps_last_good(tmp_path: Path) -> None:
    config = tmp_path / "authz.yaml"
    config.write_text(ANON.format(path="/a"))
    args = ["--config", str(config), "--grpc-address", f"unix:{tmp_path / 'authz.sock'}",
            "--reload-interval", "0.05"]
    with service(tmp_path, args) as (_, client, log_path):
        assert allowed(client, "/a")
        config.write_text(ANON.format(path="/b"))
        wait_for(lambda: allowed(client, "/b"), what="the new config")
        assert not allowed(client, "/a")
        config.write_text(ANON.format(path="/c") + "bogus: 1\n")
        wait_for(lambda: "config reload rejected" in log_path.read_text(), what="rejection log")
        rejected = next(
            json.loads(line) for line in log_path.read_text().splitlines()
            if "config reload rejected" in line
        )
        assert rejected["error"] == f"{config}:6: bogus: unknown key 'bogus'"
        assert rejected["line"] == 6
        assert allowed(client, "/b")
        assert not allowed(client, "/c")


def test_configmap_symlink_swap_is_reloaded(tmp_path: Path) -> None:
    mount = tmp_path / "config"
    mount.mkdir()
    first = mount / "..2026_11_23_09_00_00.1"
    first.mkdir()
    (first / "authz.yaml").write_text(ANON.format(path="/a"))
    (mount / "..data").symlink_to(first.name)
    (mount / "authz.yaml").symlink_to("..data/authz.yaml")
    args = ["--config", str(mount / "authz.yaml"),
            "--grpc-address", f"unix:{tmp_path / 'authz.sock'}", "--reload-interval", "0.05"]
    with service(tmp_path, args) as (_, client, _log):
        assert allowed(client, "/a")
        # What the kubelet does: write a new timestamped dir, re-point ..data atomically.
        second = mount / "..2026_11_23_09_01_00.2"
        second.mkdir()
        (second / "authz.yaml").write_text(ANON.format(path="/b"))
        (mount / "..data_tmp").symlink_to(second.name)
        os.rename(mount / "..data_tmp", mount / "..data")
        for child in first.iterdir():
            child.unlink()
        first.rmdir()
        wait_for(lambda: allowed(client, "/b"), what="the swapped config")
        assert not allowed(client, "/a")


def test_sighup_reloads_now(tmp_path: Path) -> None:
    config = tmp_path / "authz.yaml"
    config.write_text(ANON.format(path="/a"))
    args = ["--config", str(config), "--grpc-address", f"unix:{tmp_path / 'authz.sock'}",
            "--reload-interval", "3600"]
    with service(tmp_path, args) as (proc, client, _log):
        config.write_text(ANON.format(path="/b"))
        # Watched for three default poll intervals (1 s): were --reload-interval ignored,
        # the poll would reload within this, and the test fails.
        stays_false(lambda: allowed(client, "/b"), seconds=3.0, what="a reload by polling")
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: allowed(client, "/b"), timeout=5, what="reload on SIGHUP")


def _slow_refetch_config(idp: HttpServer) -> str:
    return f"""realm: t
identities:
  - name: idp
    jwt:
      issuer: {jwt_kit.ISSUER}
      audiences: [{jwt_kit.AUDIENCE}]
      jwks_uri: {idp.base_url}/jwks
      refresh: {{unknown_kid_cooldown_seconds: 0, timeout_seconds: 10,
                 unknown_kid_wait_seconds: 10}}
routes:
  - name: orders
    match: {{path: {{prefix: /orders}}}}
    identities: [idp]
    require: {{scopes: {{all_of: ["orders:read"]}}}}
"""


def not_serving(client: AuthzClient) -> bool:
    reply = client.health.Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
    return bool(reply.status == health_pb2.HealthCheckResponse.NOT_SERVING)


def test_sigterm_drains_in_flight_check_then_exits_zero(tmp_path: Path) -> None:
    old, new = jwt_kit.rsa_key("old"), jwt_kit.rsa_key("new")
    with serve_http() as idp:
        idp.set_json("/jwks", jwt_kit.jwks(old))
        config = tmp_path / "authz.yaml"
        config.write_text(_slow_refetch_config(idp))
        args = ["--config", str(config), "--grpc-address", f"unix:{tmp_path / 'authz.sock'}",
                "--drain-seconds", "8", "--drain-announce-seconds", "0.5"]
        with service(tmp_path, args) as (proc, client, log_path):
            token = jwt_kit.mint(old)
            wait_for(lambda: client.check(check_request(
                headers={"authorization": f"Bearer {token}"})).allowed, what="first fetch")
            # The IdP now answers slowly with a rotated key: a Check with the new kid
            # waits on that refetch.
            idp.set_route("/jwks", Route(body=json.dumps(jwt_kit.jwks(new)).encode(), delay=1.5))
            hits = idp.hits_for("/jwks")
            pending = client.stub.Check.future(
                check_request(headers={"authorization": f"Bearer {jwt_kit.mint(new)}"}),
                timeout=15,
            )
            wait_for(lambda: idp.hits_for("/jwks") > hits, what="the refetch in flight")
            started = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            wait_for(lambda: not_serving(client), timeout=5, what="health NOT_SERVING")
            answer = pending.result(timeout=15)
            assert answer.status.code == 0  # the in-flight Check completed, allowed
            assert proc.wait(timeout=10) == 0
            assert time.monotonic() - started < 8
            assert "draining" in log_path.read_text()
    # a new connection is refused once it is gone
    late = AuthzClient(f"unix:{tmp_path / 'authz.sock'}")
    try:
        with pytest.raises(grpc.RpcError):
            late.check(check_request(), timeout=1)
    finally:
        late.close()
