"""Every Envoy YAML under envoy/, rendered as `tollgate up` renders it (Unix sockets and
TCP), passes validation, and keeps its security choices."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.kits.processes import binary
from tollgate_cli import devcerts
from tollgate_cli.stack import ENVOY_DIR, over_tcp, render

CONFIGS = sorted(ENVOY_DIR.glob("*.yaml"))
VALUES: dict[str, str | int] = {
    "HTTPS_PORT": 8443, "MTLS_PORT": 8444, "ADMIN_PORT": 9901, "UPSTREAM_PORT": 8080,
}
# Both layouts' shared edge: TLS, mTLS, one canonical path, no forgeable headers.
EDGE = (
    "failure_mode_allow: false", "forward_client_cert_details: SANITIZE_SET",
    "require_client_certificate: true", "normalize_path: true", "merge_slashes: true",
    "path_with_escaped_slashes_action: REJECT_REQUEST", "use_remote_address: true",
    "headers_with_underscores_action: REJECT_REQUEST", "tls_minimum_protocol_version: TLSv1_2",
)


def test_there_are_configs() -> None:
    assert {p.name for p in CONFIGS} == {"envoy.yaml", "envoy-grpc.yaml"}


@pytest.mark.integration
@pytest.mark.parametrize("transport", ["uds", "tcp"])
@pytest.mark.parametrize("template", CONFIGS, ids=[p.name for p in CONFIGS])
def test_envoy_validates(template: Path, transport: str, tmp_path: Path) -> None:
    devcerts.ensure(tmp_path)
    text = render(template, {"RUN_DIR": str(tmp_path), **VALUES})
    if transport == "tcp":
        text = over_tcp(text, {"tollgate_authz": 9191, "tollgate_ratelimit": 8081})
        assert "pipe:" not in text
    rendered = tmp_path / template.name
    rendered.write_text(text)
    result = subprocess.run(
        [binary("envoy"), "--mode", "validate", "-c", str(rendered)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_http_layout_keeps_its_security_choices() -> None:
    text = (ENVOY_DIR / "envoy.yaml").read_text()
    for needle in (*EDGE, "path_prefix: /check", "pipe: {path: ${RUN_DIR}/authz.sock}"):
        assert needle in text, needle
    assert "envoy.filters.http.ratelimit" not in text  # limits are decided in the Check
    assert "pack_as_bytes: true" not in text  # the HTTP door reads the body, not raw_body


def test_the_grpc_layout_keeps_its_security_choices() -> None:
    text = (ENVOY_DIR / "envoy-grpc.yaml").read_text()
    for needle in (
        *EDGE, "include_peer_certificate: true", "failure_mode_deny: false",
        "enable_x_ratelimit_headers: DRAFT_VERSION_03", "domain: tollgate",
        "pipe: {path: ${RUN_DIR}/authz.sock}", "pipe: {path: ${RUN_DIR}/ratelimit.sock}",
    ):
        assert needle in text, needle
