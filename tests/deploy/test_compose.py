"""docker-compose.yml: valid against the compose-spec schema, hardened, pinned, wired.

The compose-spec JSON schema is the copy vendored by check-jsonschema (PyPI), so no
Docker engine is needed. The Envoy config it mounts is checked by `envoy --mode
validate` in test_envoy_configs.py.
"""

from __future__ import annotations

import json
import re
from importlib import resources
from typing import Any

import jsonschema
import yaml

from tests.deploy._util import COMPOSE_FILE, ROOT, run_tool


def _compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(data, dict)
    return data


def _schema() -> dict[str, Any]:
    ref = resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    schema: dict[str, Any] = json.loads(ref.read_text())
    return schema


def _validator() -> jsonschema.protocols.Validator:
    schema = _schema()
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    validator: jsonschema.protocols.Validator = cls(schema)
    return validator


def test_compose_file_matches_the_compose_spec_schema() -> None:
    errors = sorted(_validator().iter_errors(_compose()),
                    key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)


def test_check_jsonschema_cli_agrees() -> None:
    result = run_tool("check-jsonschema", "--builtin-schema", "vendor.compose-spec",
                      str(COMPOSE_FILE))
    assert result.returncode == 0, result.stdout + result.stderr


def test_services_are_the_stack_of_issue_4() -> None:
    services = _compose()["services"]
    assert set(services) == {"envoy", "authz", "ratelimit", "redis", "otel-collector"}
    assert services["envoy"]["image"] == "envoyproxy/envoy:v1.40.0"
    assert "authz-service" in services["authz"]["command"][0]
    assert services["ratelimit"]["command"][0] == "ratelimit-service"
    assert services["ratelimit"]["environment"]["RATELIMIT_REDIS_URL"].startswith(
        "redis://redis:")
    assert services["ratelimit"]["depends_on"]["redis"]["condition"] == "service_healthy"
    for name in ("authz", "ratelimit"):
        assert services["envoy"]["depends_on"][name]["condition"] == "service_healthy"


def test_every_image_is_pinned() -> None:
    for name, svc in _compose()["services"].items():
        image = svc["image"]
        repo, _, tag = image.rpartition(":")
        assert repo and tag and tag != "latest", f"{name}: {image}"
        assert re.search(r"\d+\.\d+\.\d+", tag), f"{name}: tag {tag} is not a full version"


def test_every_service_is_hardened() -> None:
    for name, svc in _compose()["services"].items():
        assert svc.get("read_only") is True, name
        assert svc.get("cap_drop") == ["ALL"], name
        assert "no-new-privileges:true" in svc.get("security_opt", []), name
        user = str(svc.get("user", ""))
        assert re.fullmatch(r"[1-9]\d*:[1-9]\d*", user), f"{name}: user {user!r}"


def test_healthchecks_where_the_image_can_run_one() -> None:
    services = _compose()["services"]
    for name in ("authz", "ratelimit", "redis"):
        test = services[name]["healthcheck"]["test"]
        assert test[0] == "CMD", name
    assert services["authz"]["healthcheck"]["test"][1] == "tollgate-grpc-health"


def test_only_envoy_is_published_and_only_on_loopback() -> None:
    compose = _compose()
    for name, svc in compose["services"].items():
        if name == "envoy":
            assert all(str(p).startswith("127.0.0.1:") for p in svc["ports"])
        else:
            assert "ports" not in svc, name
    assert compose["networks"]["internal"]["internal"] is True


def test_mounted_files_exist_and_service_configs_check() -> None:
    for name, svc in _compose()["services"].items():
        for vol in svc.get("volumes", []):
            assert vol["type"] == "bind" and vol["read_only"] is True, name
            assert (ROOT / vol["source"]).exists(), f"{name}: {vol['source']}"
    authz = run_tool("authz-service", "--check-config",
                     str(ROOT / "deploy/compose/authz/authz.yaml"))
    assert authz.returncode == 0, authz.stderr
    ratelimit = run_tool("ratelimit-service", "--check-config",
                         str(ROOT / "deploy/compose/ratelimit"))
    assert ratelimit.returncode == 0, ratelimit.stderr


def test_collector_config_receives_otlp_and_logs() -> None:
    config = yaml.safe_load((ROOT / "deploy/compose/otel-collector.yaml").read_text())
    assert "grpc" in config["receivers"]["otlp"]["protocols"]
    pipeline = config["service"]["pipelines"]["traces"]
    assert pipeline["receivers"] == ["otlp"] and pipeline["exporters"] == ["debug"]


def test_the_schema_does_reject_a_broken_file() -> None:
    broken = _compose()
    broken["services"]["authz"]["read_onyl"] = True
    assert list(_validator().iter_errors(broken))
