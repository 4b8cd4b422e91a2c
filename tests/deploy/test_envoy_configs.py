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
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.deploy._util import run_tool, shipped_envoy_configs

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
