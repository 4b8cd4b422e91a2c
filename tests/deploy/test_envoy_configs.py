"""Every committed Envoy config validates with the real Envoy 1.40 and keeps its safety settings."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import binary
from tollgate.devcerts import ensure_dev_certs
from tollgate.envoy_config import ENVOY_DIR, SIDECAR_CONFIG, EnvoyPorts, render, write_rendered

CONFIGS = sorted(ENVOY_DIR.glob("*.yaml"))


def _validate(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([binary("envoy"), "--mode", "validate", "-c", str(path)],
                          capture_output=True, text=True, timeout=60, check=False)


def test_there_are_configs_to_check() -> None:
    assert {p.name for p in CONFIGS} >= {"envoy.yaml", "envoy-tcp.yaml"}


@pytest.mark.integration
@pytest.mark.parametrize("template", CONFIGS, ids=lambda p: p.name)
def test_config_passes_envoy_validate(template: Path, tmp_path: Path) -> None:
    # The committed files name the container paths; point them at real files here.
    ensure_dev_certs(tmp_path / "certs")
    rendered = write_rendered(render(template, tmp_path / "certs", tmp_path, EnvoyPorts()),
                              tmp_path / "envoy.json")
    result = _validate(rendered)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK" in result.stdout + result.stderr


@pytest.mark.integration
def test_envoy_validate_rejects_a_broken_config(tmp_path: Path) -> None:
    # Proves the check above can fail: a filter with an unknown field.
    broken = SIDECAR_CONFIG.read_text().replace("failure_mode_allow: false",
                                                "failure_mode_allow_typo: false")
    template = tmp_path / "broken.yaml"
    template.write_text(broken)
    ensure_dev_certs(tmp_path / "certs")
    rendered = write_rendered(render(template, tmp_path / "certs", tmp_path, EnvoyPorts()),
                              tmp_path / "envoy.json")
    assert _validate(rendered).returncode != 0


def _hcms(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        listener["name"]: listener["filter_chains"][0]["filters"][0]["typed_config"]
        for listener in config["static_resources"]["listeners"]
    }


@pytest.mark.parametrize("template", CONFIGS, ids=lambda p: p.name)
def test_safety_settings(template: Path) -> None:
    config = yaml.safe_load(template.read_text())
    hcms = _hcms(config)
    assert set(hcms) == {"https", "mtls"}
    for hcm in hcms.values():
        assert hcm["normalize_path"] is True
        assert hcm["merge_slashes"] is True
        assert hcm["path_with_escaped_slashes_action"] in {"UNESCAPE_AND_REDIRECT",
                                                           "REJECT_REQUEST"}
        filters = {f["name"]: f["typed_config"] for f in hcm["http_filters"]}
        names = [f["name"] for f in hcm["http_filters"]]
        # authz before ratelimit (dynamic metadata), router last.
        assert names == ["envoy.filters.http.ext_authz", "envoy.filters.http.ratelimit",
                         "envoy.filters.http.router"]
        authz = filters["envoy.filters.http.ext_authz"]
        assert authz["failure_mode_allow"] is False
        assert authz["include_peer_certificate"] is True
        assert authz["grpc_service"]["timeout"]
        assert "with_request_body" not in authz  # only per route
        ratelimit = filters["envoy.filters.http.ratelimit"]
        assert ratelimit["domain"] == "tollgate"
        assert ratelimit["failure_mode_deny"] is False
        assert ratelimit["enable_x_ratelimit_headers"] == "DRAFT_VERSION_03"
    assert hcms["https"]["forward_client_cert_details"] == "SANITIZE"
    assert hcms["mtls"]["forward_client_cert_details"] == "SANITIZE_SET"
    mtls_tls = config["static_resources"]["listeners"][1]["filter_chains"][0]["transport_socket"]
    assert mtls_tls["typed_config"]["require_client_certificate"] is True


def test_rate_limit_descriptors_come_from_authz_metadata() -> None:
    config = yaml.safe_load(SIDECAR_CONFIG.read_text())
    vhost = _hcms(config)["https"]["route_config"]["virtual_hosts"][0]
    per_identity, per_address = vhost["rate_limits"]
    plan, subject = (a["metadata"] for a in per_identity["actions"])
    assert (plan["descriptor_key"], plan["default_value"], plan["source"]) == (
        "plan", "free", "DYNAMIC")
    assert plan["metadata_key"] == {"key": "envoy.filters.http.ext_authz",
                                    "path": [{"key": "plan"}]}
    assert subject["descriptor_key"] == "subject"
    assert subject["metadata_key"]["path"] == [{"key": "subject"}]
    assert per_address["actions"] == [{"remote_address": {}}]


def test_tcp_variant_differs_only_in_clusters() -> None:
    uds = yaml.safe_load(SIDECAR_CONFIG.read_text())
    tcp = yaml.safe_load((ENVOY_DIR / "envoy-tcp.yaml").read_text())
    assert uds["static_resources"]["listeners"] == tcp["static_resources"]["listeners"]
    assert uds["admin"] == tcp["admin"]
    addresses = {
        c["name"]: c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
        for c in uds["static_resources"]["clusters"]
    }
    assert "pipe" in addresses["authz"]
    assert "pipe" in addresses["ratelimit"]
