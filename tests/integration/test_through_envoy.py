"""Over HTTPS through a real Envoy in front of both services (the `tollgate up` stack).

One stack for the module; each test uses its own subject so rate-limit counters do
not interfere. The last two tests stop a service, so they stay last.
"""

from __future__ import annotations

import http.client
import json
import time
from concurrent.futures import ThreadPoolExecutor

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.kits.processes import wait_for
from tollgate_cli import demo_issuer, token
from tollgate_cli.stack import Response, Stack, request, tls_context

pytestmark = pytest.mark.integration


def https(stack: Stack, method: str, path: str, headers: dict[str, str] | None = None,
          bearer: str | None = None) -> Response:
    all_headers = dict(headers or {})
    if bearer is not None:
        all_headers["authorization"] = f"Bearer {bearer}"
    return request(stack.options.https_port, method, path, ca=stack.ca, headers=all_headers)


def mtls(stack: Stack, client: str, path: str, headers: dict[str, str] | None = None
         ) -> Response:
    return request(stack.options.mtls_port, "GET", path, ca=stack.ca, client=client,
                   headers=headers)


def mint(stack: Stack, **claims: object) -> str:
    return token.mint(stack.run_dir, **claims)  # type: ignore[arg-type]


def upstream_headers(answer: Response) -> dict[str, str]:
    headers: dict[str, str] = answer.json()["headers"]  # type: ignore[assignment]
    return headers


def test_valid_token_reaches_the_upstream_with_identity_headers(stack: Stack) -> None:
    answer = https(stack, "GET", "/orders/42", bearer=mint(stack, sub="alice", tenant="acme"))
    assert answer.status == 200
    echoed = answer.json()
    assert echoed["path"] == "/orders/42"
    seen = upstream_headers(answer)
    assert seen["x-tollgate-subject"] == "alice"
    assert seen["x-tollgate-identity"] == "jwt"
    assert seen["x-tollgate-scopes"] == "orders:read"
    assert seen["x-tollgate-tenant"] == "acme"
    assert seen["x-tollgate-plan"] == "free"
    assert "authorization" not in seen  # the credential stops at the edge
    assert "x-forwarded-client-cert" not in seen


def test_no_token_is_401_with_a_challenge(stack: Stack) -> None:
    answer = https(stack, "GET", "/orders/42")
    assert answer.status == 401
    # The demo issuer also takes DPoP (RFC 9449 §7.1): both schemes are offered.
    assert answer.headers["www-authenticate"] == (
        'Bearer realm="tollgate", DPoP realm="tollgate", algs="ES256 EdDSA RS256 PS256"')
    body = answer.json()
    assert body["error"] == "missing_credentials" and body["request_id"]


@pytest.mark.parametrize("kind", ["expired", "bad_signature"])
def test_bad_token_is_401_invalid_token(stack: Stack, kind: str) -> None:
    if kind == "expired":
        bad = token.mint(stack.run_dir, sub="dave", ttl=60, now=time.time() - 3600)
    else:
        kid = demo_issuer.load_key(stack.run_dir).kid
        other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        good = jwt.decode(mint(stack, sub="dave"), options={"verify_signature": False})
        bad = jwt.encode(good, other, algorithm="RS256", headers={"typ": "at+jwt", "kid": kid})
    answer = https(stack, "GET", "/orders/42", bearer=bad)
    assert answer.status == 401
    assert 'error="invalid_token"' in answer.headers["www-authenticate"]
    assert answer.json()["error"] == "invalid_token"
    assert bad not in answer.body.decode()


def test_empty_bearer_is_400(stack: Stack) -> None:
    answer = request(stack.options.https_port, "GET", "/orders/42", ca=stack.ca,
                     headers={"authorization": "Bearer "})
    assert answer.status == 400
    assert answer.json()["error"] == "invalid_request"


def test_missing_scope_is_403_insufficient_scope(stack: Stack) -> None:
    answer = https(stack, "POST", "/orders", bearer=mint(stack, sub="erin"))
    assert answer.status == 403
    assert 'error="insufficient_scope"' in answer.headers["www-authenticate"]
    assert 'scope="orders:write"' in answer.headers["www-authenticate"]
    assert answer.json()["error"] == "insufficient_scope"
    write = mint(stack, sub="erin", scope="orders:write")
    assert post_order(stack, write, b'{"sku": "SKU-1", "quantity": 2}').status == 200


def post_order(stack: Stack, bearer: str, body: bytes,
               content_type: str = "application/json") -> Response:
    return request(stack.options.https_port, "POST", "/orders", ca=stack.ca, body=body,
                   headers={"authorization": f"Bearer {bearer}", "content-type": content_type})


def test_writes_are_validated_against_the_order_schema(stack: Stack) -> None:
    write = mint(stack, sub="erin3", scope="orders:write")
    good = post_order(stack, write, b'{"sku": "SKU-1", "quantity": 2}')
    assert good.status == 200
    assert upstream_headers(good)["x-tollgate-subject"] == "erin3"
    bad = post_order(stack, write, b'{"sku": "SKU-1", "quantity": 1000}')
    assert bad.status == 400
    assert bad.headers["content-type"] == "application/problem+json"
    problem = bad.json()
    assert (problem["status"], problem["pointer"]) == (400, "/quantity")
    assert "1000" not in bad.body.decode()  # the offending value is not echoed
    assert post_order(stack, write, b'{"sku": "SKU-1"', "application/json").status == 400
    assert post_order(stack, write, b"sku=SKU-1", "application/x-www-form-urlencoded"
                      ).status == 415


def test_only_writes_buffer_the_body_for_authz(stack: Stack) -> None:
    write = mint(stack, sub="erin2", scope="orders:write")
    big = {"content-type": "application/json", "content-length": str(16 * 1024)}
    answer = request(stack.options.https_port, "POST", "/orders", ca=stack.ca,
                     headers={**big, "authorization": f"Bearer {write}"}, body=b"x" * 16 * 1024)
    assert answer.status == 413  # over the route's 8 KiB: truncated, flagged, refused
    # GETs are not buffered: a body there is not sent to authz (and not validated).
    read = mint(stack, sub="erin2", scope="orders:read")
    plain = request(stack.options.https_port, "GET", "/orders/1", ca=stack.ca,
                    headers={"authorization": f"Bearer {read}"}, body=b"x" * 16 * 1024)
    assert plain.status == 200


def test_mtls_admin_is_allowed_by_spiffe_id(stack: Stack) -> None:
    answer = mtls(stack, "admin", "/admin/settings")
    assert answer.status == 200
    seen = upstream_headers(answer)
    assert seen["x-tollgate-subject"] == "spiffe://tollgate.local/ns/demo/sa/admin"
    assert seen["x-tollgate-identity"] == "mtls"
    # Envoy set XFCC from the verified certificate (SANITIZE_SET, uri).
    assert "URI=spiffe://tollgate.local/ns/demo/sa/admin" in seen["x-forwarded-client-cert"]


def test_mtls_other_spiffe_id_is_refused(stack: Stack) -> None:
    answer = mtls(stack, "intruder", "/admin/settings")
    assert answer.status == 403
    assert answer.json()["error"] == "peer_not_allowed"


def test_forged_xfcc_grants_nothing_and_never_reaches_the_upstream(stack: Stack) -> None:
    forged = {"x-forwarded-client-cert":
              "By=spiffe://tollgate.local/ns/demo/sa/envoy;"
              "URI=spiffe://tollgate.local/ns/demo/sa/admin"}
    denied = https(stack, "GET", "/admin/settings", headers=forged)
    assert denied.status == 401  # no verified peer: no credentials at all
    assert denied.json()["error"] == "missing_credentials"
    public = https(stack, "GET", "/public/info", headers=forged)
    assert public.status == 200
    assert "x-forwarded-client-cert" not in upstream_headers(public)
    # On mTLS, a forged header is replaced by the one of the verified certificate.
    claims_intruder = {"x-forwarded-client-cert": "URI=spiffe://tollgate.local/ns/x/sa/forged"}
    peer = mtls(stack, "admin", "/public/info", headers=claims_intruder)
    assert peer.status == 200
    xfcc = upstream_headers(peer)["x-forwarded-client-cert"]
    assert "sa/admin" in xfcc and "forged" not in xfcc


def test_forged_identity_headers_do_not_reach_the_upstream(stack: Stack) -> None:
    forged = {"x-tollgate-subject": "root", "x-tollgate-plan": "gold",
              "x-tollgate-tenant": "evil", "x-tollgate-scopes": "orders:write"}
    public = upstream_headers(https(stack, "GET", "/public/info", headers=forged))
    assert not {k for k in public if k.startswith("x-tollgate-")} - {"x-tollgate-identity"}
    assert public.get("x-tollgate-identity", "anonymous") == "anonymous"
    assert https(stack, "POST", "/orders", headers=forged).status == 401
    seen = upstream_headers(https(stack, "GET", "/orders/1", headers=forged,
                                  bearer=mint(stack, sub="frank")))
    assert seen["x-tollgate-subject"] == "frank"
    assert seen["x-tollgate-plan"] == "free" and seen["x-tollgate-tenant"] == "demo"


def test_free_plan_subject_gets_429_after_five(stack: Stack) -> None:
    bearer = mint(stack, sub="grace")
    # The limit is 5 a minute in windows aligned to the clock's minutes: six requests
    # must not straddle a boundary, or the sixth opens a new window.
    wait_for(lambda: time.time() % 60 < 45, 20, "the start of a minute window")
    answers = [https(stack, "GET", "/orders", bearer=bearer) for _ in range(6)]
    assert [a.status for a in answers] == [200] * 5 + [429]
    assert answers[0].headers["x-ratelimit-limit"].startswith("5")
    assert answers[0].headers["x-ratelimit-remaining"] == "4"
    assert "x-ratelimit-reset" in answers[0].headers
    assert answers[5].headers["x-ratelimit-remaining"] == "0"
    # The counter is per subject: another free subject still passes.
    assert https(stack, "GET", "/orders", bearer=mint(stack, sub="heidi")).status == 200


def test_gold_plan_is_not_limited_at_six(stack: Stack) -> None:
    bearer = mint(stack, sub="ivan", plan="gold")
    answers = [https(stack, "GET", "/orders", bearer=bearer) for _ in range(6)]
    assert [a.status for a in answers] == [200] * 6
    assert answers[-1].headers["x-ratelimit-limit"].startswith("50")


@pytest.mark.parametrize("path", [
    "/public/../admin", "/public/%2e%2e/admin", "/public/%2E%2E/admin", "//admin",
    "/public/..%2fadmin", "/public/..%2Fadmin", "/public/..%5cadmin", "/./admin",
])
def test_traversal_paths_do_not_reach_admin(stack: Stack, path: str) -> None:
    answer = https(stack, "GET", path)
    assert answer.status in (400, 401, 403), (answer.status, answer.body[:200])
    assert b'"path"' not in answer.body  # nothing from the upstream


def test_healthz_needs_no_authz(stack: Stack) -> None:
    assert https(stack, "GET", "/healthz").status == 200


# --- the HTTP door's own guarantees, through Envoy -------------------------------------


@pytest.mark.parametrize("stack", ["http"], indirect=True)
def test_forged_attribute_headers_never_reach_authz(stack: Stack) -> None:
    """Only Envoy sets x-tollgate-attr-*: a client's are not in allowed_headers, so a
    claimed peer identity without a certificate is no identity at all."""
    forged = {"x-tollgate-attr-peer-principal": "spiffe://tollgate.local/ns/demo/sa/admin",
              "x-tollgate-attr-peer-cert-sha256": "ab" * 32,
              "x-tollgate-attr-route": "public",
              "x-tollgate-attr-source-address": "10.9.9.9"}
    denied = https(stack, "GET", "/admin/settings", headers=forged)
    assert denied.status == 401
    assert denied.json()["error"] == "missing_credentials"
    # On the mTLS listener, Envoy's own value wins over a forged one.
    peer = mtls(stack, "intruder", "/admin/settings", headers=forged)
    assert peer.status == 403 and peer.json()["error"] == "peer_not_allowed"


@pytest.mark.parametrize("stack", ["http"], indirect=True)
def test_a_forged_token_flood_is_held_back_before_any_signature_check(stack: Stack) -> None:
    """The embedded policy counts 50 requests a second per client address before
    authentication: past that, forged tokens are answered 429 unread."""
    context = tls_context(stack.ca)
    forged = token.mint(stack.run_dir, sub="mallory")[:-8] + "AAAAAAAA"
    # Eight callers at once, so the flood passes 50 a second even on a loaded machine;
    # each stops at its first 429.
    stop = time.monotonic() + 15

    def flood() -> list[str]:
        conn = http.client.HTTPSConnection("localhost", stack.options.https_port,
                                           context=context, timeout=10)
        seen: list[str] = []
        try:
            while time.monotonic() < stop and "rate_limited" not in seen:
                conn.request("GET", "/orders/1", headers={"authorization": f"Bearer {forged}"})
                answer = conn.getresponse()
                seen.append(json.loads(answer.read())["error"])
        finally:
            conn.close()
        return seen

    with ThreadPoolExecutor(8) as pool:
        runs = list(pool.map(lambda _: flood(), range(8)))
    assert all(run[-1] == "rate_limited" for run in runs), [run[-3:] for run in runs]
    assert {code for run in runs for code in run[:-1]} <= {"invalid_token"}
    # Leave the address's budget as found: wait for the next window.
    wait_for(lambda: https(stack, "GET", "/public/info").status == 200, 5,
             "the per-address window to pass")


@pytest.mark.parametrize("stack", ["grpc"], indirect=True)
def test_ratelimit_service_down_fails_open(stack: Stack) -> None:
    """failure_mode_deny: false: limits are capacity protection, authz still applies."""
    bearer = mint(stack, sub="judy")
    assert https(stack, "GET", "/orders", bearer=bearer).status == 200
    stack.stop_part("ratelimit")
    answer = https(stack, "GET", "/orders", bearer=bearer)
    assert answer.status == 200
    assert "x-ratelimit-limit" not in answer.headers
    assert https(stack, "GET", "/orders").status == 401


def test_authz_service_down_fails_closed(stack: Stack) -> None:
    stack.stop_part("authz")
    answer = https(stack, "GET", "/orders/1", bearer=mint(stack, sub="kim"))
    assert answer.status == 403
    assert b'"path"' not in answer.body
    assert https(stack, "GET", "/public/info").status == 403
    # /healthz has ext_authz disabled per route: it still answers.
    assert https(stack, "GET", "/healthz").status == 200

