"""The authz-service process contract: --check-config, env vars, health, reflection,
hot reload (edits, the Kubernetes ConfigMap swap, SIGHUP) and the SIGTERM drain."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from tests.authz import jwt_kit
from tests.authz.grpc_kit import AuthzClient, authz_process, check_request
from tests.authz.http_kit import Route, serve_http
from tests.support import binary, free_port, stop_process, wait_for

DEFAULT = Path(__file__).resolve().parents[2] / "authz_service" / "defaults" / "authz.yaml"

PUBLIC = """
routes:
  - name: open
    match: {path: {prefix: /}}
    anonymous: true
"""
CLOSED = """
unmatched: deny
routes: []
"""


def check_config(path: Path, *, via: str = "authz-service") -> subprocess.CompletedProcess[str]:
    argv = ([binary("authz-service"), "--check-config", str(path)] if via == "authz-service"
            else [binary("tollgate"), "check-config", "authz", str(path)])
    return subprocess.run(argv, capture_output=True, text=True, check=False, timeout=60)


def test_embedded_default_is_valid() -> None:
    result = check_config(DEFAULT)
    assert result.returncode == 0, result.stderr
    assert "ok (2 identity sources, 6 routes)" in result.stdout


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("realm: x\ncolour: red\n", "{f}:2: colour: unknown key 'colour'"),
        ("identities:\n  - name: a\n    jwt:\n      issuer: i\n      jwks_file: k.json\n"
         "      algorithms: [RS256, XS1]\n",
         "{f}:6: identities[0].jwt.algorithms: Value error, algorithm 'XS1' is not supported"),
        ("identities:\n  - name: a\n    jwt:\n      issuer: i\n      algorithms: [HS256]\n",
         "{f}:3: identities[0].jwt: Value error, HS* algorithms need an explicit "
         "'shared_secret_env'"),
        ("routes:\n  - name: r\n    identities: [ghost]\n",
         "{f}:3: routes[0].identities[0]: unknown identity source 'ghost'"),
        ("routes:\n  - name: r\n    anonymous: true\n  - name: r\n    anonymous: true\n",
         "{f}:4: routes[1].name: duplicate route name 'r'"),
        ("routes: [\n", "{f}:2: invalid YAML"),
        ("realm: a\nrealm: b\n", "{f}:2: duplicate key 'realm'"),
        ("identities:\n  - name: a\n    jwt:\n      issuer: https://i.test\n"
         "      jwks_uri: http://idp.example.com/keys\n",
         "{f}:3: identities[0].jwt: 'http://idp.example.com/keys': http is only allowed to "
         "loopback (set allow_insecure_http)"),
    ],
)
def test_broken_configs_name_file_line_and_reason(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "authz.yaml"
    path.write_text(text)
    for via in ("authz-service", "tollgate"):
        result = check_config(path, via=via)
        assert result.returncode == 1
        assert result.stderr.strip().startswith(message.format(f=path)), result.stderr


def test_missing_file(tmp_path: Path) -> None:
    result = check_config(tmp_path / "nope.yaml")
    expected = f"{tmp_path}/nope.yaml: file not found"
    assert (result.returncode, result.stderr.strip()) == (1, expected)


def test_env_vars_configure_a_tcp_address_and_health_and_reflection(tmp_path: Path) -> None:
    (tmp_path / "authz.yaml").write_text(PUBLIC)
    port = free_port()
    env = {**os.environ, "AUTHZ_CONFIG": str(tmp_path / "authz.yaml"),
           "AUTHZ_GRPC_ADDRESS": f"127.0.0.1:{port}"}
    proc = subprocess.Popen([binary("authz-service")], env=env, stderr=subprocess.DEVNULL)
    client = AuthzClient(f"127.0.0.1:{port}")
    try:
        wait_for(client.serving, 20, "health SERVING over TCP")
        assert client.check(check_request(path="/x")).allowed
        stub = reflection_pb2_grpc.ServerReflectionStub(client.channel)
        replies = stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
        )
        names = {s.name for reply in replies for s in reply.list_services_response.service}
        assert {"envoy.service.auth.v3.Authorization", "grpc.health.v1.Health"} <= names
    finally:
        client.close()
        stop_process(proc)


def test_reload_swaps_valid_and_keeps_last_good(tmp_path: Path) -> None:
    config = tmp_path / "authz.yaml"
    config.write_text(PUBLIC)
    with authz_process(config, tmp_path) as (_, client):
        assert client.check(check_request(path="/x")).allowed
        config.write_text(CLOSED)
        wait_for(lambda: not client.check(check_request(path="/x")).allowed, 10, "reload")
        config.write_text("routes: [broken\n")
        wait_for(lambda: "config reload rejected" in (tmp_path / "authz.log").read_text(),
                 10, "the rejection log line")
        log = (tmp_path / "authz.log").read_text()
        assert f"{config}:2: invalid YAML" in log
        assert not client.check(check_request(path="/x")).allowed  # still the last good


def test_kubernetes_configmap_swap_and_sighup(tmp_path: Path) -> None:
    mount = tmp_path / "mount"
    mount.mkdir()
    first = mount / "..2026_11_23_08_00_00.1"
    first.mkdir()
    (first / "authz.yaml").write_text(PUBLIC)
    os.symlink(first.name, mount / "..data")
    os.symlink("..data/authz.yaml", mount / "authz.yaml")
    with authz_process(mount / "authz.yaml", tmp_path) as (proc, client):
        assert client.check(check_request(path="/x")).allowed
        second = mount / "..2026_11_23_08_01_00.2"
        second.mkdir()
        (second / "authz.yaml").write_text(CLOSED)
        os.symlink(second.name, mount / "..data_tmp")
        os.replace(mount / "..data_tmp", mount / "..data")
        wait_for(lambda: not client.check(check_request(path="/x")).allowed, 10,
                 "the ConfigMap swap to be seen")
        # SIGHUP reloads at once, even when nothing looks changed.
        before = (tmp_path / "authz.log").read_text().count("config reloaded")
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: (tmp_path / "authz.log").read_text().count("config reloaded") > before,
                 10, "a reload after SIGHUP")


def test_sigterm_drains_in_flight_checks_then_exits(tmp_path: Path) -> None:
    # An in-flight Check is made slow by a JWKS refetch that the IdP answers in 1.5 s.
    with serve_http() as idp:
        idp.set_json("/keys", jwt_kit.jwks(jwt_kit.rsa_key("k1")))
        config = tmp_path / "authz.yaml"
        config.write_text(f"""
identities:
  - name: idp
    jwt:
      issuer: {jwt_kit.ISSUER}
      jwks_uri: {idp.base_url}/keys
      refresh: {{unknown_kid_cooldown_seconds: 0, timeout_seconds: 5}}
routes:
  - name: all
    match: {{path: {{prefix: /}}}}
""")
        with authz_process(config, tmp_path) as (proc, client):
            wait_for(lambda: idp.hits_for("/keys") >= 1, 10, "the first JWKS fetch")
            body = idp.routes["/keys"].body
            idp.set_route("/keys", Route(body=body, delay=1.5))
            result: dict[str, int] = {}

            def slow_check() -> None:
                token = jwt_kit.mint(jwt_kit.rsa_key("k2"))
                answer = client.check(check_request(headers={"authorization": f"Bearer {token}"}))
                result["status"] = answer.status

            thread = threading.Thread(target=slow_check)
            thread.start()
            wait_for(lambda: idp.hits_for("/keys") >= 2, 10, "the slow refetch to start")
            proc.send_signal(signal.SIGTERM)
            health = health_pb2_grpc.HealthStub(client.channel)

            def not_serving() -> bool:
                try:
                    reply = health.Check(health_pb2.HealthCheckRequest(), timeout=1)
                except grpc.RpcError:
                    return True
                return bool(reply.status == health_pb2.HealthCheckResponse.NOT_SERVING)

            wait_for(not_serving, 5, "health NOT_SERVING after SIGTERM")
            thread.join(10)
            assert result == {"status": 401}  # the in-flight check was answered
            assert proc.wait(15) == 0
