"""docker-compose.yml against the compose-spec schema, the Dockerfile through hadolint."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from tests.support import binary

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"


def test_compose_file_matches_the_compose_spec_schema() -> None:
    result = subprocess.run(
        [binary("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_schema_check_can_fail(tmp_path: Path) -> None:
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(COMPOSE.read_text().replace("    ports:\n", "    portz:\n", 1))
    result = subprocess.run(
        [binary("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(broken)],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode != 0


def test_compose_wiring() -> None:
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    assert set(services) >= {"envoy", "authz", "ratelimit", "redis", "otel-collector"}
    assert services["envoy"]["image"] == "envoyproxy/envoy:v1.40.0"
    assert "./envoy/envoy-tcp.yaml:/etc/envoy/envoy.yaml:ro" in services["envoy"]["volumes"]
    assert services["ratelimit"]["environment"]["REDIS_URL"].startswith("redis://redis:")
    for name in ("authz", "ratelimit", "upstream"):
        service = services[name]
        assert service["read_only"] is True
        assert service["user"] == "10001:10001"
        assert service["cap_drop"] == ["ALL"]
    # The Envoy cluster addresses are the Compose service names and ports.
    tcp = (ROOT / "envoy" / "envoy-tcp.yaml").read_text()
    assert "address: authz, port_value: 9191" in tcp
    assert "address: ratelimit, port_value: 8081" in tcp
    assert services["authz"]["environment"]["AUTHZ_GRPC_ADDRESS"].endswith(":9191")
    assert services["ratelimit"]["environment"]["RATELIMIT_GRPC_ADDRESS"].endswith(":8081")


def test_dockerfile_passes_hadolint() -> None:
    result = subprocess.run([binary("hadolint"), str(ROOT / "Dockerfile")],
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_is_multi_stage_and_non_root() -> None:
    lines = [line.strip() for line in (ROOT / "Dockerfile").read_text().splitlines()]
    assert sum(line.startswith("FROM ") for line in lines) >= 2
    users = [line for line in lines if line.startswith("USER ")]
    assert users and users[-1] != "USER root" and not users[-1].startswith("USER 0")
