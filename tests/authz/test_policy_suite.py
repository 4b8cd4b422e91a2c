"""`tollgate test`: a policy's tests, decided offline by the engine the service runs.

Callers are stated (source, subject, scopes, claims, key id, SPIFFE ID), and each
mechanism turns them into the Identity it proves for a real credential, so a test
passes exactly when the service would answer so. CI runs the shipped demo suite.
"""

from __future__ import annotations

import hashlib
import io
import subprocess
from pathlib import Path

import pytest

from authz_service.settings import DEFAULT_CONFIG
from tests.kits.processes import binary
from tollgate_cli.policy_tests import run_tests

DEMO_TESTS = DEFAULT_CONFIG.with_name("authz.tests.yaml")

POLICY = f"""realm: shop
identities:
  - name: idp
    jwt:
      issuer: https://login.shop.test/
      audiences: [shop-api]
      jwks_uri: https://login.shop.test/keys
      subject_claim: email
      roles_claim: groups
  - name: partners
    api_key:
      keys:
        - id: billing
          sha256: {hashlib.sha256(b"k").hexdigest()}
          subject: svc-billing
          scopes: ["invoices:read"]
          metadata: {{tenant: acme}}
routes:
  - name: invoices
    match: {{methods: [GET], path: {{prefix: /invoices}}}}
    identities: [partners, idp]
    require: {{scopes: {{all_of: ["invoices:read"]}}}}
  - name: ops
    match: {{path: {{prefix: /ops}}}}
    identities: [idp]
    require: {{roles: {{any_of: [ops]}}}}
"""

PASSING = """tests:
  - name: the billing key reads invoices
    request: {path: /invoices/1}
    identity: {source: partners, key: billing}
    expect: {decision: allow, route: invoices,
             upstream_headers: {x-tollgate-subject: svc-billing, x-tollgate-tenant: acme}}
  - name: the subject lands in the configured subject claim
    request: {path: /invoices}
    identity: {source: idp, subject: ann@shop.test, scopes: ["invoices:read"]}
    expect: {decision: allow, upstream_headers: {x-tollgate-subject: ann@shop.test}}
  - name: roles are read from the configured roles claim
    request: {method: POST, path: /ops/restart}
    identity: {source: idp, subject: ann@shop.test, roles: [ops]}
    expect: {decision: allow, route: ops}
  - name: claims as the token carries them work too
    request: {path: /ops}
    identity: {source: idp, claims: {email: bo@shop.test, groups: "dev ops"}}
    expect: {decision: allow, route: ops}
  - name: an API key cannot reach a route that lists only the IdP
    request: {path: /ops}
    identity: {source: partners, key: billing}
    expect: {decision: deny, status: 401, code: missing_credentials}
"""

FAILING = """tests:
  - name: passes
    request: {path: /invoices/1}
    identity: {source: partners, key: billing}
    expect: {decision: allow}
  - name: wrong decision
    request: {path: /ops}
    identity: {source: idp, subject: ann@shop.test, roles: [dev]}
    expect: {decision: allow, route: ops}
  - name: wrong code and status
    request: {path: /invoices}
    identity: {source: idp, subject: ann@shop.test}
    expect: {decision: deny, status: 401, code: access_denied}
  - name: wrong header
    request: {path: /invoices}
    identity: {source: partners, key: billing}
    expect: {decision: allow, route: ops, upstream_headers: {x-tollgate-plan: gold}}
"""


def run(tmp_path: Path, tests: str, *, verbose: bool = False) -> tuple[int, str, str, Path]:
    policy, suite = tmp_path / "policy.yaml", tmp_path / "policy.tests.yaml"
    policy.write_text(POLICY)
    suite.write_text(tests)
    out, err = io.StringIO(), io.StringIO()
    code = run_tests(str(policy), str(suite), out, err, verbose=verbose)
    return code, out.getvalue(), err.getvalue(), suite


def test_a_passing_suite_exits_zero_and_says_so(tmp_path: Path) -> None:
    code, out, err, suite = run(tmp_path, PASSING)
    assert (code, err) == (0, "")
    assert out == f"{suite}: 5 tests: 5 passed, 0 failed (policy {tmp_path / 'policy.yaml'})\n"


def test_verbose_lists_every_test_with_its_line(tmp_path: Path) -> None:
    code, out, _, suite = run(tmp_path, PASSING, verbose=True)
    assert code == 0
    assert out.splitlines()[:2] == [f"ok   {suite}:2: the billing key reads invoices",
                                    f"ok   {suite}:7: the subject lands in the configured "
                                    "subject claim"]


def test_a_failing_suite_exits_one_and_says_what_differed(tmp_path: Path) -> None:
    code, out, _, suite = run(tmp_path, FAILING)
    assert code == 1
    assert out.splitlines() == [
        f"FAIL {suite}:6: wrong decision",
        "       expected allow on route 'ops', got deny 403 access_denied on route 'ops'",
        f"FAIL {suite}:10: wrong code and status",
        "       expected status 401, got 403",
        "       expected code 'access_denied', got 'insufficient_scope' "
        "(requires scope: invoices:read)",
        f"FAIL {suite}:14: wrong header",
        "       expected route 'ops', got 'invoices'",
        "       expected upstream header x-tollgate-plan: 'gold', got not set",
        f"{suite}: 4 tests: 1 passed, 3 failed (policy {tmp_path / 'policy.yaml'})",
    ]


@pytest.mark.parametrize(("tests", "message"), [
    ("tests:\n  - name: x\n    request: {path: /a}\n    identity: {source: nobody}\n"
     "    expect: {decision: allow}\n",
     "4: tests[0].identity.source: unknown identity source 'nobody' (the policy's: idp, "
     "partners)"),
    ("tests:\n  - name: x\n    request: {path: /a}\n    identity: {source: partners, key: gone}\n"
     "    expect: {decision: allow}\n",
     "4: tests[0].identity: no key with id 'gone' in identity source 'partners'"),
    ("tests:\n  - name: x\n    request: {path: /a}\n"
     "    identity: {source: partners, claims: {sub: a}}\n    expect: {decision: allow}\n",
     "4: tests[0].identity: an API key identity is given as 'key: <the key's id>'"),
    ("tests:\n  - name: x\n    request: {path: /a}\n    identity: {source: idp, key: billing}\n"
     "    expect: {decision: allow}\n",
     "4: tests[0].identity: a JWT identity is given as claims (and subject, scopes, roles)"),
    ("tests:\n  - name: x\n    request: {path: /a}\n"
     "    identity: {source: partners, kind: jwt, key: billing}\n    expect: {decision: allow}\n",
     "4: tests[0].identity.kind: identity source 'partners' is api_key, not jwt"),
    ("tests:\n  - name: x\n    request: {method: GTE, path: /a}\n    expect: {decision: allow}\n",
     "3: tests[0].request.method: 'GTE' is not an HTTP method (did you mean GET?); a "
     "method of your own is listed under 'extension_methods'"),
    ("tests:\n  - name: x\n    request: {path: /a}\n    expect: {decision: maybe}\n",
     "4: tests[0].expect.decision: must be 'allow' or 'deny', found the text 'maybe'"),
    ("tests:\n  - name: x\n    request: {path: /a}\n",
     "2: tests[0].expect: missing required key 'expect'"),
    ("tests: []\n", "1: tests: needs at least 1 item(s)"),
], ids=["unknown-source", "unknown-key", "key-as-claims", "jwt-as-key", "wrong-kind", "bad-method",
        "bad-decision", "no-expect", "no-tests"])
def test_an_unusable_test_file_exits_two_naming_file_and_line(
    tmp_path: Path, tests: str, message: str
) -> None:
    code, out, err, suite = run(tmp_path, tests)
    assert (code, out) == (2, "")
    assert err.strip() == f"{suite}:{message}"


def test_a_broken_policy_exits_two(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY.replace("      audiences: [shop-api]\n", ""))
    out, err = io.StringIO(), io.StringIO()
    assert run_tests(str(policy), str(DEMO_TESTS), out, err) == 2
    assert err.getvalue().startswith(f"{policy}:4: identities[0].jwt: no 'audiences'")


def test_the_shipped_demo_suite_passes_in_process() -> None:
    out, err = io.StringIO(), io.StringIO()
    assert run_tests(str(DEFAULT_CONFIG), str(DEMO_TESTS), out, err) == 0, out.getvalue()
    assert out.getvalue() == (f"{DEMO_TESTS}: 16 tests: 16 passed, 0 failed "
                              f"(policy {DEFAULT_CONFIG})\n")


@pytest.mark.integration
def test_the_shipped_demo_policy_passes_its_suite() -> None:
    result = subprocess.run(
        [binary("tollgate"), "test", str(DEFAULT_CONFIG), str(DEMO_TESTS)],
        capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith("16 tests: 16 passed, 0 failed "
                                          f"(policy {DEFAULT_CONFIG})")


@pytest.mark.integration
def test_a_failing_suite_fails_the_command(tmp_path: Path) -> None:
    _, _, _, suite = run(tmp_path, FAILING)
    result = subprocess.run(
        [binary("tollgate"), "test", str(tmp_path / "policy.yaml"), str(suite)],
        capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 1
    assert "3 failed" in result.stdout


def test_a_policy_test_may_send_a_method_its_policy_lists_as_its_own(tmp_path: Path) -> None:
    policy = tmp_path / "authz.yaml"
    policy.write_text("extension_methods: [PURGE]\nroutes:\n"
                      "  - {name: purge, match: {methods: [PURGE]}, anonymous: true}\n")
    tests = tmp_path / "authz.tests.yaml"
    tests.write_text("tests:\n  - name: purge\n    request: {method: purge, path: /a}\n"
                     "    expect: {decision: allow, route: purge}\n")
    out, err = io.StringIO(), io.StringIO()
    assert run_tests(str(policy), str(tests), out, err) == 0, (out.getvalue(), err.getvalue())
    policy.write_text("routes:\n  - {name: r, anonymous: true}\n")
    assert run_tests(str(policy), str(tests), out, err) == 2  # the tests file is refused
    assert "'PURGE' is not an HTTP method" in err.getvalue()
