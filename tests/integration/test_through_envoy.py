"""The contract of the whole stack, over HTTPS through the real Envoy 1.40.

Needs authz-service and ratelimit-service from this repository on their embedded
defaults (the issuer port aside), so a failure here is a failure of the wiring.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator

import pytest

from tests.integration.conftest import LiveStack
from tests.support import binary

pytestmark = pytest.mark.integration

ADMIN = "spiffe://tollgate.local/ns/demo/sa/admin"


def _curl(live: LiveStack, url: str, *extra: str) -> tuple[int, str]:
    """GET with curl, which (unlike httpx) sends the path exactly as written."""
    result = subprocess.run(
        [binary("curl"), "-sS", "--path-as-is", "--cacert", live.ca, "-o", "-",
         "-w", "\n%{http_code}", *extra, url],
        capture_output=True, text=True, timeout=15, check=True,
    )
    body, _, status = result.stdout.rpartition("\n")
    return int(status), body


# --- allow -----------------------------------------------------------------------------


def test_valid_token_reaches_upstream_with_identity_headers(live: LiveStack) -> None:
    token = live.token(scopes="orders:read", subject="alice")
    with live.client() as client:
        reply = client.get(f"{live.https}/orders/42", headers={
            "Authorization": f"Bearer {token}",
            "X-Tollgate-Subject": "mallory",  # a client-sent copy must not survive
        })
    assert reply.status_code == 200, reply.text
    seen = reply.json()["headers"]
    assert seen["x-tollgate-subject"] == "alice"
    assert seen["x-tollgate-identity"] == "jwt"
    assert seen["x-tollgate-scopes"] == "orders:read"
    assert seen["x-tollgate-plan"] == "free"
    assert seen["x-tollgate-tenant"] == "demo"
    assert "authorization" not in seen  # the credential stays at the edge


def test_public_and_health_routes_need_no_credentials(live: LiveStack) -> None:
    with live.client() as client:
        assert client.get(f"{live.https}/healthz").status_code == 200
        assert client.get(f"{live.https}/public/docs").status_code == 200


def test_write_with_body_is_allowed_with_the_write_scope(live: LiveStack) -> None:
    token = live.token(scopes="orders:write")
    with live.client() as client:
        reply = client.post(f"{live.https}/orders", json={"item": "tea", "quantity": 1},
                            headers={"Authorization": f"Bearer {token}"})
    # 200 from the echo upstream, or a 400 naming the body if the authz schema wants more:
    # either way the buffered body reached authz-service and the scope check passed.
    assert reply.status_code in {200, 400}, reply.text
    if reply.status_code == 400:
        assert reply.json()["error"] != "insufficient_scope"


# --- denials ---------------------------------------------------------------------------


def _denial(reply_status: int, headers: dict[str, str], body: str, status: int,
            error: str | None) -> None:
    assert reply_status == status, body
    challenge = headers["www-authenticate"]
    assert challenge.startswith('Bearer realm="tollgate"')
    document = json.loads(body)
    assert set(document) >= {"error", "error_description"}
    if error is None:
        assert "error=" not in challenge
    else:
        assert f'error="{error}"' in challenge
        assert document["error"] == error


def test_no_credentials_is_401_without_error(live: LiveStack) -> None:
    with live.client() as client:
        reply = client.get(f"{live.https}/orders/42")
    _denial(reply.status_code, dict(reply.headers), reply.text, 401, None)


def test_bad_token_is_401_invalid_token(live: LiveStack) -> None:
    token = live.token()
    tampered = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    with live.client() as client:
        for bad in ("not.a.token", tampered):
            reply = client.get(f"{live.https}/orders/42",
                               headers={"Authorization": f"Bearer {bad}"})
            _denial(reply.status_code, dict(reply.headers), reply.text, 401, "invalid_token")
            assert bad not in reply.text  # never echo a credential


def test_token_twice_is_400_invalid_request(live: LiveStack) -> None:
    token = live.token()
    with live.client() as client:
        reply = client.get(f"{live.https}/orders/42", headers=[
            ("Authorization", f"Bearer {token}"), ("Authorization", f"Bearer {token}")])
    _denial(reply.status_code, dict(reply.headers), reply.text, 400, "invalid_request")


def test_missing_scope_is_403_insufficient_scope(live: LiveStack) -> None:
    token = live.token(scopes="orders:read orders:writeX")
    with live.client() as client:
        reply = client.post(f"{live.https}/orders", json={},
                            headers={"Authorization": f"Bearer {token}"})
    _denial(reply.status_code, dict(reply.headers), reply.text, 403, "insufficient_scope")
    assert 'scope="orders:write"' in reply.headers["www-authenticate"]


def test_unmatched_route_is_denied(live: LiveStack) -> None:
    token = live.token(scopes="orders:read orders:write admin")
    with live.client() as client:
        reply = client.get(f"{live.https}/internal/secrets",
                           headers={"Authorization": f"Bearer {token}"})
    assert reply.status_code == 403
    assert "x-tollgate-subject" not in reply.text


# --- mTLS ------------------------------------------------------------------------------


def test_admin_spiffe_id_is_allowed_on_admin(live: LiveStack) -> None:
    assert live.stack.certs is not None
    with live.client(live.stack.certs.admin) as client:
        reply = client.get(f"{live.mtls}/admin/stats")
    assert reply.status_code == 200, reply.text
    seen = reply.json()["headers"]
    assert seen["x-tollgate-subject"] == ADMIN
    assert seen["x-tollgate-identity"] == "mtls"
    assert f"URI={ADMIN}" in seen["x-forwarded-client-cert"]


def test_other_spiffe_id_is_refused_on_admin(live: LiveStack) -> None:
    assert live.stack.certs is not None
    with live.client(live.stack.certs.intruder) as client:
        reply = client.get(f"{live.mtls}/admin/stats")
    assert reply.status_code == 403, reply.text


def test_mtls_listener_refuses_a_handshake_without_certificate(live: LiveStack) -> None:
    status = subprocess.run(
        [binary("curl"), "-sS", "--cacert", live.ca, "-o", "/dev/null", f"{live.mtls}/healthz"],
        capture_output=True, text=True, timeout=15, check=False,
    )
    assert status.returncode != 0  # TLS alert: certificate required


def test_forged_xfcc_is_ignored(live: LiveStack) -> None:
    forged = {"X-Forwarded-Client-Cert": f"Hash=00;URI={ADMIN}"}
    assert live.stack.certs is not None
    with live.client() as client:
        # No certificate: the forged header grants nothing ...
        reply = client.get(f"{live.https}/admin/stats", headers=forged)
        assert reply.status_code in {401, 403}, reply.text
        # ... and is not passed on to the application either.
        echoed = client.get(f"{live.https}/public/x", headers=forged).json()["headers"]
        assert "x-forwarded-client-cert" not in echoed
    with live.client(live.stack.certs.intruder) as client:
        reply = client.get(f"{live.mtls}/admin/stats", headers=forged)
        assert reply.status_code == 403, reply.text
        # authz refuses this unlisted peer everywhere it is asked; /healthz skips authz,
        # so it shows what Envoy itself forwards: the verified peer, not the forgery.
        echoed = client.get(f"{live.mtls}/healthz", headers=forged).json()["headers"]
        assert ADMIN not in echoed["x-forwarded-client-cert"]
        assert "sa/intruder" in echoed["x-forwarded-client-cert"]


# --- path normalisation ----------------------------------------------------------------

TRAVERSALS = ["/public/../admin", "/public/%2e%2e/admin", "//admin", "/public/..%2fadmin",
              "/public/%2E%2E/admin/stats", "/./admin"]


@pytest.mark.parametrize("path", TRAVERSALS)
def test_traversal_does_not_dodge_the_admin_policy(live: LiveStack, path: str) -> None:
    status, body = _curl(live, f"{live.https}{path}")
    assert status in {301, 307, 308, 400, 401, 403, 404}, body
    assert "x-tollgate-subject" not in body


@pytest.mark.parametrize("path", TRAVERSALS)
def test_traversal_by_an_intruder_peer_is_refused(live: LiveStack, path: str) -> None:
    assert live.stack.certs is not None
    pair = live.stack.certs.intruder
    status, body = _curl(live, f"{live.mtls}{path}", "--cert", str(pair.cert),
                         "--key", str(pair.key))
    assert status != 200, body


def test_upstream_sees_the_normalised_path(live: LiveStack) -> None:
    assert live.stack.certs is not None
    pair = live.stack.certs.admin
    status, body = _curl(live, f"{live.mtls}/public/%2e%2e//admin/./stats", "--cert",
                         str(pair.cert), "--key", str(pair.key))
    assert status == 200, body
    assert json.loads(body)["path"] == "/admin/stats"


# --- rate limiting ---------------------------------------------------------------------


def test_per_subject_429_with_ratelimit_headers(live: LiveStack) -> None:
    token = live.token(plan="free")
    other = live.token(plan="free")
    with live.client() as client:
        statuses = []
        for _ in range(5):
            reply = client.get(f"{live.https}/orders", headers={"Authorization": f"Bearer {token}"})
            statuses.append(reply.status_code)
        assert statuses == [200] * 5
        assert reply.headers["x-ratelimit-limit"].startswith("5, 5;w=60")
        assert reply.headers["x-ratelimit-remaining"] == "0"
        limited = client.get(f"{live.https}/orders", headers={"Authorization": f"Bearer {token}"})
        assert limited.status_code == 429
        assert limited.headers["x-ratelimit-remaining"] == "0"
        assert int(limited.headers["x-ratelimit-reset"]) <= 60
        # Another subject on the same plan has its own counter.
        fresh = client.get(f"{live.https}/orders", headers={"Authorization": f"Bearer {other}"})
        assert fresh.status_code == 200


def test_gold_plan_gets_the_gold_limit(live: LiveStack) -> None:
    token = live.token(plan="gold")
    with live.client() as client:
        for _ in range(7):
            reply = client.get(f"{live.https}/orders", headers={"Authorization": f"Bearer {token}"})
            assert reply.status_code == 200
    assert reply.headers["x-ratelimit-limit"].split(",")[0] == "600"


# --- failure modes (these stop a service and start it again) ----------------------------


@pytest.fixture
def authz_stopped(live: LiveStack) -> Iterator[None]:
    live.stack.stop_process("authz-service")
    try:
        yield
    finally:
        live.stack.start_authz()


@pytest.fixture
def ratelimit_stopped(live: LiveStack) -> Iterator[None]:
    live.stack.stop_process("ratelimit-service")
    try:
        yield
    finally:
        live.stack.start_ratelimit()


@pytest.mark.usefixtures("authz_stopped")
def test_authz_down_fails_closed(live: LiveStack) -> None:
    token = live.token()
    with live.client() as client:
        reply = client.get(f"{live.https}/orders/1", headers={"Authorization": f"Bearer {token}"})
        assert reply.status_code == 403
        assert "x-tollgate-subject" not in reply.text
        # Health is not behind authz, so the load balancer still sees Envoy up.
        assert client.get(f"{live.https}/healthz").status_code == 200


@pytest.mark.usefixtures("ratelimit_stopped")
def test_ratelimit_down_fails_open_as_configured(live: LiveStack) -> None:
    # failure_mode_deny: false -> traffic flows (authz still applies) with no limit.
    token = live.token(plan="free")
    with live.client() as client:
        for _ in range(7):
            reply = client.get(f"{live.https}/orders", headers={"Authorization": f"Bearer {token}"})
            assert reply.status_code == 200
        assert client.get(f"{live.https}/orders/1").status_code == 401
