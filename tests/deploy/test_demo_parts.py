"""The local stack's own parts: dev certificates, demo issuer, tokens, echo upstream."""

from __future__ import annotations

import stat
from pathlib import Path

import httpx
import jwt
import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from tollgate.cli import main
from tollgate.demo_issuer import (
    DemoIssuer,
    IssuerNotReadyError,
    ensure_signing_key,
    issuer_url,
    load_signing_key,
)
from tollgate.demo_upstream import DemoUpstream
from tollgate.devcerts import ADMIN_SPIFFE_ID, INTRUDER_SPIFFE_ID, ensure_dev_certs
from tollgate.token import mint


def _uris(path: Path) -> list[str]:
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return san.get_values_for_type(x509.UniformResourceIdentifier)


def test_dev_certs_identities_and_key_modes(tmp_path: Path) -> None:
    certs = ensure_dev_certs(tmp_path)
    assert _uris(certs.admin.cert) == [ADMIN_SPIFFE_ID]
    assert _uris(certs.intruder.cert) == [INTRUDER_SPIFFE_ID]
    server = x509.load_pem_x509_certificate(certs.server.cert.read_bytes())
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    usage = server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.SERVER_AUTH]
    ca = x509.load_pem_x509_certificate(certs.ca.cert.read_bytes())
    for pair in (certs.server, certs.admin, certs.intruder):
        x509.load_pem_x509_certificate(pair.cert.read_bytes()).verify_directly_issued_by(ca)
        assert stat.S_IMODE(pair.key.stat().st_mode) == 0o600
    assert stat.S_IMODE(certs.ca.key.stat().st_mode) == 0o600


def test_dev_certs_are_reused_while_valid_and_replaced_when_broken(tmp_path: Path) -> None:
    first = ensure_dev_certs(tmp_path).server.cert.read_bytes()
    assert ensure_dev_certs(tmp_path).server.cert.read_bytes() == first
    (tmp_path / "ca.crt").write_text("garbage")
    assert ensure_dev_certs(tmp_path).server.cert.read_bytes() != first


def test_issuer_serves_discovery_and_jwks_that_verify_minted_tokens(tmp_path: Path) -> None:
    issuer = DemoIssuer(ensure_signing_key(tmp_path, issuer_url(0)), port=0)
    issuer.start()
    try:
        base = f"http://127.0.0.1:{issuer.port}"
        discovery = httpx.get(f"{base}/.well-known/openid-configuration").json()
        assert discovery["jwks_uri"] == f"{discovery['issuer']}/jwks.json"
        jwks = httpx.get(f"{base}/jwks.json").json()
    finally:
        issuer.stop()
    key = load_signing_key(tmp_path)
    token = mint(key, subject="carol", scopes="orders:read orders:write", plan="gold",
                 tenant="acme", ttl=60)
    header = jwt.get_unverified_header(token)
    assert header == {"alg": "RS256", "typ": "at+jwt", "kid": key.kid}
    (jwk,) = jwks["keys"]
    assert jwk["kid"] == key.kid
    assert "d" not in jwk  # public half only
    claims = jwt.decode(token, jwt.PyJWK(jwk).key, algorithms=["RS256"],
                        audience="tollgate-demo", issuer=key.issuer)
    assert claims["sub"] == "carol"
    assert claims["scope"] == "orders:read orders:write"
    assert (claims["plan"], claims["tenant"]) == ("gold", "acme")
    assert claims["exp"] - claims["iat"] == 60
    assert claims["nbf"] == claims["iat"]
    assert claims["client_id"] and claims["jti"]


def test_signing_key_is_private_and_stable(tmp_path: Path) -> None:
    first = ensure_signing_key(tmp_path, "http://127.0.0.1:9999")
    assert stat.S_IMODE((tmp_path / "issuer-signing-key.pem").stat().st_mode) == 0o600
    assert ensure_signing_key(tmp_path, "http://127.0.0.1:9999").kid == first.kid


def test_token_command_without_a_stack_says_what_to_do(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(IssuerNotReadyError):
        load_signing_key(tmp_path)
    assert main(["token", "--run-dir", str(tmp_path)]) == 1
    assert "run `tollgate up` first" in capsys.readouterr().err


def test_token_command_prints_a_token(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ensure_signing_key(tmp_path, "http://127.0.0.1:9999")
    assert main(["token", "--run-dir", str(tmp_path), "--sub", "dave", "--scope",
                 "orders:write", "--plan", "gold", "--ttl", "30"]) == 0
    claims = jwt.decode(capsys.readouterr().out.strip(), options={"verify_signature": False})
    assert (claims["sub"], claims["scope"], claims["plan"]) == ("dave", "orders:write", "gold")
    assert claims["iss"] == "http://127.0.0.1:9999"


def test_upstream_echoes_request_headers() -> None:
    upstream = DemoUpstream(port=0)
    upstream.start()
    try:
        echoed = httpx.get(f"http://127.0.0.1:{upstream.port}/orders/7?x=1",
                           headers={"X-Tollgate-Subject": "alice"}).json()
    finally:
        upstream.stop()
    assert echoed["method"] == "GET"
    assert echoed["path"] == "/orders/7?x=1"
    assert echoed["headers"]["x-tollgate-subject"] == "alice"
