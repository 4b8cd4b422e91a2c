"""Every Envoy YAML under envoy/, rendered as `tollgate up` renders it, passes validation."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.support import binary
from tollgate import devcerts
from tollgate.stack import ENVOY_DIR, render

CONFIGS = sorted(ENVOY_DIR.glob("*.yaml"))


def test_there_are_configs() -> None:
    assert {p.name for p in CONFIGS} >= {"envoy.yaml", "envoy-tcp.yaml"}


@pytest.mark.integration
@pytest.mark.parametrize("template", CONFIGS, ids=[p.name for p in CONFIGS])
def test_envoy_validates(template: Path, tmp_path: Path) -> None:
    devcerts.ensure(tmp_path)
    values: dict[str, str | int] = {
        "RUN_DIR": str(tmp_path), "HTTPS_PORT": 8443, "MTLS_PORT": 8444, "ADMIN_PORT": 9901,
        "UPSTREAM_PORT": 8080, "AUTHZ_PORT": 9191, "RATELIMIT_PORT": 8081,
    }
    rendered = tmp_path / template.name
    rendered.write_text(render(template, values))
    result = subprocess.run(
        [binary("envoy"), "--mode", "validate", "-c", str(rendered)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_sidecar_config_keeps_its_security_choices() -> None:
    text = (ENVOY_DIR / "envoy.yaml").read_text()
    for needle in (
        "failure_mode_allow: false", "include_peer_certificate: true",
        "forward_client_cert_details: SANITIZE_SET", "require_client_certificate: true",
        "normalize_path: true", "merge_slashes: true",
        "path_with_escaped_slashes_action: REJECT_REQUEST", "failure_mode_deny: false",
        "enable_x_ratelimit_headers: DRAFT_VERSION_03", "domain: tollgate",
        "tls_minimum_protocol_version: TLSv1_2", "pipe: {path: ${RUN_DIR}/authz.sock}",
    ):
        assert needle in text, needle
