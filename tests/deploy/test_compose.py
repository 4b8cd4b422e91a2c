"""docker-compose.yml: valid against the compose-spec schema, whole, hardened, pinned.

The compose-spec JSON schema is the copy vendored by check-jsonschema (PyPI), so no
Docker engine is needed. "Whole": every file it mounts exists, every service it names
(depends_on, the Envoy configs' cluster addresses) is defined in the same profile and
listens on that port, every health check runs a command the image has. The Envoy
configs it mounts are validated by `envoy --mode validate` in test_envoy_configs.py and
held to the Envoy <-> authz contract in tests/authz/test_envoy_contract.py.
"""

from __future__ import annotations

import json
import os
import re
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.kits.deploy_kit import (
    COMPOSE_DIR,
    COMPOSE_FILE,
    ROOT,
    is_http_layout,
    project_version,
    run_tool,
    tollgate_image,
)

pytestmark = pytest.mark.integration  # check-jsonschema, the services' --check-config

DEFAULT = {"envoy", "authz", "otel-collector"}
GRPC_PROFILE = {"envoy-grpc", "authz-grpc", "ratelimit", "redis"}


def _compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(data, dict)
    return data


def _validator() -> jsonschema.protocols.Validator:
    ref = resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    schema: dict[str, Any] = json.loads(ref.read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    validator: jsonschema.protocols.Validator = cls(schema)
    return validator


def _interpolated(value: str) -> str:
    """Compose's ${NAME:-default} with NAME unset."""
    return re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", value)


def _profiles(service: dict[str, Any]) -> set[str]:
    return set(service.get("profiles", [])) or {"default"}


def _listens(service: dict[str, Any]) -> set[int]:
    ports = set()
    for arg in service.get("command", []):
        match = re.fullmatch(r"--(?:grpc|http)-address=0\.0\.0\.0:(\d+)", str(arg))
        if match:
            ports.add(int(match.group(1)))
    if service.get("image", "").startswith("redis:"):
        ports.add(6379)
    if service.get("image", "").startswith("otel/"):
        ports.add(4317)
    return ports


def test_compose_file_matches_the_compose_spec_schema() -> None:
    errors = sorted(_validator().iter_errors(_compose()),
                    key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)


def test_check_jsonschema_cli_agrees() -> None:
    result = run_tool("check-jsonschema", "--builtin-schema", "vendor.compose-spec",
                      str(COMPOSE_FILE))
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_schema_does_reject_a_broken_file() -> None:
    broken = _compose()
    broken["services"]["authz"]["read_onyl"] = True
    assert list(_validator().iter_errors(broken))


def test_the_default_is_the_http_layout_and_grpc_a_profile() -> None:
    services = _compose()["services"]
    assert {n for n, s in services.items() if "profiles" not in s} == DEFAULT
    assert {n for n, s in services.items() if s.get("profiles") == ["grpc"]} == GRPC_PROFILE
    authz = services["authz"]["command"]
    assert authz[0] == "authz-service"
    assert "--http-address=0.0.0.0:9192" in authz and "--grpc-address=off" in authz
    assert "--grpc-address=0.0.0.0:9191" in services["authz-grpc"]["command"]
    assert services["ratelimit"]["command"][0] == "ratelimit-service"
    assert services["ratelimit"]["environment"]["RATELIMIT_REDIS_URL"] == "redis://redis:6379/0"
    mounted = {s: v["source"] for s in ("envoy", "envoy-grpc")
               for v in services[s]["volumes"] if v["target"] == "/etc/envoy/envoy.yaml"}
    assert is_http_layout(yaml.safe_load((ROOT / mounted["envoy"]).read_text()))
    assert not is_http_layout(yaml.safe_load((ROOT / mounted["envoy-grpc"]).read_text()))
    # Both layouts can run at once: different host ports.
    assert services["envoy"]["ports"] != services["envoy-grpc"]["ports"]


def test_every_named_service_exists_in_the_same_profile() -> None:
    services = _compose()["services"]
    for name, service in services.items():
        for needed, condition in service.get("depends_on", {}).items():
            assert needed in services, f"{name} depends on {needed}, which is not defined"
            other = _profiles(services[needed])
            assert "default" in other or _profiles(service) <= other, (name, needed)
            if condition["condition"] == "service_healthy":
                assert "healthcheck" in services[needed], (name, needed)


@pytest.mark.parametrize("envoy", ["envoy", "envoy-grpc"])
def test_every_envoy_cluster_address_is_a_service_listening_on_that_port(envoy: str) -> None:
    services = _compose()["services"]
    source = next(v["source"] for v in services[envoy]["volumes"]
                  if v["target"] == "/etc/envoy/envoy.yaml")
    config = yaml.safe_load((ROOT / source).read_text())
    named = 0
    for cluster in config["static_resources"]["clusters"]:
        if cluster["type"] != "STRICT_DNS":
            continue
        for group in cluster["load_assignment"]["endpoints"]:
            for endpoint in group["lb_endpoints"]:
                socket = endpoint["endpoint"]["address"]["socket_address"]
                host, port = socket["address"], socket["port_value"]
                assert host in services, f"{source}: cluster {cluster['name']}: no {host}"
                assert port in _listens(services[host]), f"{source}: {host} is not on {port}"
                assert _profiles(services[host]) & (_profiles(services[envoy]) | {"default"})
                assert host in services[envoy]["depends_on"], f"{envoy} starts before {host}"
                named += 1
    assert named >= 2


def test_every_mounted_file_exists_and_the_service_configs_check() -> None:
    checked = 0
    for name, svc in _compose()["services"].items():
        for vol in svc.get("volumes", []):
            assert vol["type"] == "bind" and vol["read_only"] is True, name
            assert (ROOT / vol["source"]).exists(), f"{name}: {vol['source']}"
    for policy in ("authz", "authz-grpc"):
        result = run_tool("authz-service", "--check-config",
                          str(COMPOSE_DIR / policy / "authz.yaml"))
        assert result.returncode == 0, result.stderr
        checked += 1
    result = run_tool("ratelimit-service", "--check-config", str(COMPOSE_DIR / "limits"))
    assert result.returncode == 0, result.stderr
    assert checked == 2


def test_the_mounts_keep_the_policys_relative_rules_path() -> None:
    """The policy says `rules: ../limits`: /etc/tollgate/authz/../limits in the container
    is deploy/compose/authz/../limits in the repository."""
    authz = _compose()["services"]["authz"]
    mounts = {v["target"]: Path(v["source"]) for v in authz["volumes"]}
    policy = yaml.safe_load((COMPOSE_DIR / "authz" / "authz.yaml").read_text())
    rules = policy["rate_limits"]["rules"]
    in_container = os.path.normpath(f"/etc/tollgate/authz/{rules}")
    assert in_container in mounts, in_container
    assert (ROOT / mounts["/etc/tollgate/authz"] / rules).resolve() == \
        (ROOT / mounts[in_container]).resolve()


def test_the_grpc_profiles_policy_is_the_default_less_its_rate_limits() -> None:
    default = yaml.safe_load((COMPOSE_DIR / "authz" / "authz.yaml").read_text())
    grpc = yaml.safe_load((COMPOSE_DIR / "authz-grpc" / "authz.yaml").read_text())
    assert "rate_limits" not in grpc
    assert {k: v for k, v in default.items() if k != "rate_limits"} == grpc


def test_every_image_is_pinned_and_the_tollgate_one_is_built_here() -> None:
    compose = _compose()
    for name, svc in compose["services"].items():
        image = _interpolated(svc["image"])
        assert re.fullmatch(r"[\w./-]+:v?\d+\.\d+\.\d+[\w.-]*(@sha256:[0-9a-f]{64})?", image), \
            f"{name}: {image}"
    tollgate = compose["x-tollgate-service"]
    assert tollgate["image"] == "${TOLLGATE_IMAGE:-tollgate:" + project_version() + "}"
    assert tollgate["build"] == {"context": ".", "dockerfile": "Dockerfile"}
    built = {n for n, s in compose["services"].items() if "build" in s}
    assert built == {"authz", "authz-grpc", "ratelimit"}
    assert {compose["services"][n]["image"] for n in built} == {tollgate["image"]}


def test_every_service_is_hardened() -> None:
    for name, svc in _compose()["services"].items():
        assert svc.get("read_only") is True, name
        assert svc.get("cap_drop") == ["ALL"], name
        assert "no-new-privileges:true" in svc.get("security_opt", []), name
        user = str(svc.get("user", ""))
        assert re.fullmatch(r"[1-9]\d*:[1-9]\d*", user), f"{name}: user {user!r}"


def test_health_checks_run_commands_the_image_has() -> None:
    services = _compose()["services"]
    commands = tollgate_image().commands
    for name in ("authz", "authz-grpc", "ratelimit"):
        test = services[name]["healthcheck"]["test"]
        assert test[0] == "CMD" and test[1] in commands, name
    assert services["authz"]["healthcheck"]["test"][1:] == [
        "tollgate-http-health", "127.0.0.1:9192", "/ready"]
    assert services["redis"]["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]


def test_only_the_envoys_are_published_and_only_on_loopback() -> None:
    compose = _compose()
    for name, svc in compose["services"].items():
        if name.startswith("envoy"):
            assert all(str(p).startswith("127.0.0.1:") for p in svc["ports"])
        else:
            assert "ports" not in svc, name
    assert compose["networks"]["internal"]["internal"] is True


def test_collector_config_receives_otlp_and_logs() -> None:
    config = yaml.safe_load((COMPOSE_DIR / "otel-collector.yaml").read_text())
    assert "grpc" in config["receivers"]["otlp"]["protocols"]
    pipeline = config["service"]["pipelines"]["traces"]
    assert pipeline["receivers"] == ["otlp"] and pipeline["exporters"] == ["debug"]


def test_the_policy_is_the_embedded_demo_default_with_its_rules_beside_it() -> None:
    """deploy/compose/authz is the demo policy `tollgate up` serves, its rules path moved
    to the mounted limits directory, which holds the embedded rules."""
    embedded_dir = ROOT / "authz_service" / "defaults"
    embedded = yaml.safe_load((embedded_dir / "authz.yaml").read_text())
    compose = yaml.safe_load((COMPOSE_DIR / "authz" / "authz.yaml").read_text())
    assert compose["rate_limits"].pop("rules") == "../limits"
    embedded_rules = embedded["rate_limits"].pop("rules")
    assert compose == embedded
    assert yaml.safe_load((COMPOSE_DIR / "limits" / "tollgate.yaml").read_text()) == \
        yaml.safe_load((embedded_dir / embedded_rules).read_text())
