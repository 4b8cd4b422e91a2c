"""Every Envoy config shipped under deploy/ and by the chart passes `envoy --mode
validate` (Envoy 1.40, the images' version), as it is rendered.

The Kubernetes and chart ones are taken from the rendered ConfigMaps; their certificate
paths are pointed at a throwaway self-signed pair (validate mode loads them). The
envoy/ templates are validated by tests/integration/test_envoy_configs.py, with the
certificates `tollgate up` makes.
"""

from __future__ import annotations

import datetime
import hashlib
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from authz_service.contract import METADATA_KEYS
from tests.kits.deploy_kit import (
    ext_authz_filters,
    is_http_layout,
    run_tool,
    shipped_envoy_configs,
)

pytestmark = pytest.mark.integration

CONFIGS = {name: text for name, text in shipped_envoy_configs().items()
           if not name.startswith("envoy/")}
# One validation per distinct config (overlays and chart cases share most of theirs).
DISTINCT: dict[str, list[str]] = {}
for _name, _text in CONFIGS.items():
    DISTINCT.setdefault(_text, []).append(_name)


def envoy_validate(config: Path) -> None:
    result = run_tool("envoy", "--mode", "validate", "-c", str(config),
                      "--log-level", "warn", timeout=120)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert "OK" in result.stdout + result.stderr


def self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tollgate.test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "tls.crt", directory / "tls.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_every_shipped_place_has_its_envoy_config() -> None:
    places = {name.split(":")[0] for name in CONFIGS}
    assert {"compose/envoy.yaml", "compose/envoy-grpc.yaml", "k8s/single-replica",
            "k8s/shared-limits", "k8s/grpc", "chart/default", "chart/grpc"} <= places
    assert len(DISTINCT) >= 6


@pytest.mark.parametrize("text", list(DISTINCT), ids=[
    "+".join(names[:2]) + (f"+{len(names) - 2}" if len(names) > 2 else "")
    for names in DISTINCT.values()])
def test_the_config_validates(text: str, tmp_path: Path) -> None:
    self_signed(tmp_path)
    config = tmp_path / f"{hashlib.sha256(text.encode()).hexdigest()[:8]}.yaml"
    config.write_text(text.replace("/etc/envoy/tls/", f"{tmp_path}/"))
    envoy_validate(config)


def _hcms(config: dict[str, Any]) -> list[dict[str, Any]]:
    return [network["typed_config"]
            for listener in config["static_resources"].get("listeners", [])
            for chain in listener["filter_chains"] for network in chain["filters"]
            if network["name"] == "envoy.filters.network.http_connection_manager"]


GATEWAYS = {name: yaml.safe_load(text) for name, text in shipped_envoy_configs().items()
            if ext_authz_filters(yaml.safe_load(text))}


def test_every_gateway_config_is_one_of_the_two_layouts() -> None:
    assert len(GATEWAYS) >= 8
    for name, config in GATEWAYS.items():
        filters = [f["name"] for hcm in _hcms(config) for f in hcm["http_filters"]]
        ratelimit = "envoy.filters.http.ratelimit" in filters
        assert is_http_layout(config) != ratelimit, name  # http door XOR the RLS filter


@pytest.mark.parametrize("name", list(GATEWAYS))
def test_every_gateway_config_keeps_the_security_choices(name: str) -> None:
    """What docs/security.md promises, in every shipped Envoy that calls authz."""
    config = GATEWAYS[name]
    assert config["admin"]["address"]["socket_address"]["address"] == "127.0.0.1"
    for f in ext_authz_filters(config):
        assert f["typed_config"]["failure_mode_allow"] is False, name
    for hcm in _hcms(config):
        if not any(f["name"] == "envoy.filters.http.ext_authz" for f in hcm["http_filters"]):
            continue  # the probe listener: only /ready and /stats/prometheus
        assert hcm["use_remote_address"] is True, name
        assert hcm["normalize_path"] is True and hcm["merge_slashes"] is True, name
        assert hcm["path_with_escaped_slashes_action"] == "REJECT_REQUEST", name
        assert hcm["common_http_protocol_options"]["headers_with_underscores_action"] == \
            "REJECT_REQUEST", name
        # Envoy's default is SANITIZE: a client's x-forwarded-client-cert never passes.
        assert hcm.get("forward_client_cert_details", "SANITIZE") in {
            "SANITIZE", "SANITIZE_SET"}, name


@pytest.mark.parametrize("name", [n for n, c in GATEWAYS.items() if not is_http_layout(c)])
def test_the_grpc_layouts_ratelimit_actions_read_only_contract_metadata(name: str) -> None:
    text = shipped_envoy_configs()[name]
    keys = re.findall(r"path: \[\{key: (\w+)\}\]", text)
    assert keys and set(keys) <= set(METADATA_KEYS), name
