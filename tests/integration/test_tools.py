"""`tollgate token` and `tollgate devcerts`: no processes, quick."""

from __future__ import annotations

import stat
from pathlib import Path

import jwt
import pytest
from cryptography import x509

from tollgate_cli import demo_issuer, devcerts
from tollgate_cli.cli import main


def test_token_without_a_key_is_a_clear_error(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["token", "--run-dir", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "no issuer key" in captured.err and "tollgate up" in captured.err


def test_token_prints_only_the_token(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = demo_issuer.ensure_key(tmp_path)
    assert main(["token", "--run-dir", str(tmp_path), "--sub", "carol", "--scope",
                 "orders:read orders:write", "--plan", "gold", "--tenant", "acme",
                 "--ttl", "120"]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    token = out.strip()
    header = jwt.get_unverified_header(token)
    assert header["typ"] == "at+jwt" and header["kid"] == key.kid and header["alg"] == "RS256"
    claims = jwt.decode(token, key.private_key.public_key(), algorithms=["RS256"],
                        audience="tollgate-demo", issuer="http://127.0.0.1:9999")
    assert claims["sub"] == "carol" and claims["scope"] == "orders:read orders:write"
    assert claims["plan"] == "gold" and claims["tenant"] == "acme"
    assert claims["exp"] - claims["iat"] == 120 and claims["nbf"] == claims["iat"]
    assert claims["client_id"] and claims["jti"]


def test_devcerts_keys_are_private_and_reused(tmp_path: Path) -> None:
    certs = devcerts.ensure(tmp_path)
    for key in tmp_path.glob("*.key"):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key
    first = {p.name: p.read_bytes() for p in tmp_path.glob("*.crt")}
    devcerts.ensure(tmp_path)
    assert {p.name: p.read_bytes() for p in tmp_path.glob("*.crt")} == first
    admin = x509.load_pem_x509_certificate(certs.client_cert("admin").read_bytes())
    sans = admin.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.UniformResourceIdentifier) == [devcerts.ADMIN_SPIFFE]
    admin.verify_directly_issued_by(x509.load_pem_x509_certificate(certs.ca.read_bytes()))


def test_devcerts_reissues_a_leaf_that_no_longer_matches(tmp_path: Path) -> None:
    certs = devcerts.ensure(tmp_path)
    certs.server_key.unlink()
    devcerts.ensure(tmp_path)
    cert = x509.load_pem_x509_certificate(certs.server_cert.read_bytes())
    assert certs.server_key.exists()
    assert cert.not_valid_after_utc > cert.not_valid_before_utc
