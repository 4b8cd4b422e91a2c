"""`tollgate explain`: one request, read aloud by the pure engine (no process, no I/O
beyond the config file)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.kits import jwt_kit
from tollgate_cli.cli import main

KEY = jwt_kit.rsa_key("rsa-1")

CONFIG = """
identities:
  - name: idp
    jwt:
      issuer: {issuer}
      audiences: [{audience}]
      jwks_file: {jwks}
      roles_claim: realm_access.roles
routes:
  - name: health
    match: {{path: {{exact: /healthz}}}}
    anonymous: true
  - name: orders
    match: {{methods: [GET], path: {{prefix: /orders}}}}
    address: {{allow: [10.0.0.0/8]}}
    require:
      any_of:
        - scopes: {{all_of: [admin]}}
        - roles: {{any_of: [ops]}}
          claims: {{tenant: acme}}
        - cel: 'request.headers["x-break-glass"] == "yes"'
  - name: dry
    match: {{path: {{prefix: /dry}}}}
    shadow: true
    require: {{principals: [nobody]}}
"""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps(jwt_kit.jwks(KEY)))
    path = tmp_path / "authz.yaml"
    path.write_text(CONFIG.format(issuer=jwt_kit.ISSUER, audience=jwt_kit.AUDIENCE, jwks=jwks))
    return path


def explain(config: Path, request: dict[str, object], identity: dict[str, object] | None,
            capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    argv = ["explain", "--config", str(config), "--request", json.dumps(request)]
    if identity is not None:
        argv += ["--identity", json.dumps(identity)]
    code = main(argv)
    return code, capsys.readouterr().out


def test_explains_a_denial_node_by_node(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = explain(config, {"path": "/orders/1", "source_address": "10.0.0.1"},
                        {"subject": "alice", "roles": ["ops"], "claims": {"tenant": "globex"}},
                        capsys)
    assert code == 1
    assert out.splitlines() == [
        "route:",
        "  'health': skipped, path /orders/1 does not match exact /healthz",
        "  'orders': matched",
        "    client address '10.0.0.1' in its networks",
        "identity:",
        "  jwt 'alice' from source 'explain' (given, not authenticated); scopes []",
        "requirements:",
        "  FAIL  any of: requires scope: admin",
        "    FAIL  scopes all_of ['admin']: requires scope: admin",
        "    FAIL  all of: claim 'tenant' not accepted",
        "      pass  roles any_of ['ops']",
        "      FAIL  claim tenant in ['acme']: claim 'tenant' not accepted",
        '    FAIL  cel request.headers["x-break-glass"] == "yes": condition not met',
        "decision: deny 403 insufficient_scope: requires scope: admin",
    ]


def test_explains_an_allow_from_a_real_token(config: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    token = jwt_kit.mint(KEY, sub="bob", tenant="acme",
                         realm_access={"roles": ["ops"]})
    code, out = explain(config, {"path": "/orders/1", "source_address": "10.0.0.1",
                                 "headers": {"Authorization": f"Bearer {token}"}}, None, capsys)
    assert code == 0
    assert "  jwt 'bob' from source 'idp'; scopes ['orders:read']" in out
    assert "    pass  all of" in out
    assert out.splitlines()[-1] == "decision: allow (route 'orders', subject 'bob')"


def test_explains_the_address_and_the_unmatched(config: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    code, out = explain(config, {"path": "/orders/1", "source_address": "192.0.2.1"},
                        {"subject": "a"}, capsys)
    assert code == 1
    assert "    client address '192.0.2.1' NOT in its networks" in out
    assert out.splitlines()[-1] == "decision: deny 403 address_denied: client address not allowed"
    code, out = explain(config, {"method": "POST", "path": "/orders"}, None, capsys)
    assert "  'orders': skipped, method POST not in ['GET']" in out
    assert "no route matched: denied" in out


def test_explains_shadow_mode(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = explain(config, {"path": "/dry"}, {"subject": "a"}, capsys)
    assert code == 0
    assert out.splitlines()[-1] == (
        "  shadow mode: would have been deny 403 access_denied: principal not allowed")


def test_bad_input_is_exit_2_with_the_reason(config: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain", "--config", str(config), "--request", '{"pth": "/"}']) == 2
    assert "--request: unknown keys ['pth']" in capsys.readouterr().err
    assert main(["explain", "--config", str(config.parent / "nope.yaml"),
                 "--request", "{}"]) == 2
    assert "file not found" in capsys.readouterr().err
