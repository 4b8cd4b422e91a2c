"""The Check contract through real gRPC: statuses, challenges, headers, metadata."""

from __future__ import annotations

import pytest

from tests.kits import jwt_kit
from tests.kits.authz_stack import API_KEY, Stack
from tests.kits.grpc_kit import check_request

pytestmark = pytest.mark.integration  # every test here starts the service


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def test_valid_token_is_allowed_with_identity_headers_and_metadata(stack: Stack) -> None:
    token = jwt_kit.mint(stack.key, sub="alice", plan="gold", tenant="acme", email="a@x.test")
    answer = stack.client.check(check_request(headers=bearer(token)))
    assert answer.allowed
    assert answer.header("x-tollgate-subject") == "alice"
    assert answer.header("x-tollgate-identity") == "jwt"
    assert answer.header("x-tollgate-scopes") == "orders:read"
    assert answer.header("x-tollgate-plan") == "gold"
    assert answer.header("x-user-email") == "a@x.test"
    assert "authorization" in answer.removed  # credential stripped before the upstream
    assert answer.metadata == {
        "subject": "alice",
        "identity": "jwt",
        "issuer": jwt_kit.ISSUER,
        "tenant": "acme",
        "plan": "gold",
        "scopes": "orders:read",
        "route": "orders-read",
    }


def test_identity_headers_the_client_sent_are_removed(stack: Stack) -> None:
    token = jwt_kit.mint(stack.key)
    headers = {**bearer(token), "x-tollgate-tenant": "evil", "x-tollgate-plan": "gold"}
    answer = stack.client.check(check_request(headers=headers))
    assert answer.allowed
    assert {"x-tollgate-tenant", "x-tollgate-plan"} <= set(answer.removed)


def test_no_credentials_is_401_with_bare_challenge(stack: Stack) -> None:
    answer = stack.client.check(check_request())
    assert answer.status == 401
    assert answer.header("www-authenticate") == 'Bearer realm="tollgate"'
    assert answer.body["error"] == "missing_credentials"
    assert answer.body["request_id"] == "req-1"


def test_expired_token_is_401_invalid_token(stack: Stack) -> None:
    token = jwt_kit.mint(stack.key, exp=1_000_000, iat=999_000, nbf=999_000)
    answer = stack.client.check(check_request(headers=bearer(token)))
    assert answer.status == 401
    assert answer.header("www-authenticate") == (
        'Bearer realm="tollgate", error="invalid_token", error_description="token expired"'
    )
    assert answer.body == {
        "error": "invalid_token",
        "error_description": "token expired",
        "request_id": "req-1",
    }
    assert token not in answer.raw.denied_response.body


@pytest.mark.parametrize(
    "value", ["Bearer ", "Bearer", "Bearer a.b.c,Bearer d.e.f", "Bearer a.b.c, Bearer d.e.f"]
)
def test_malformed_bearer_is_400_invalid_request(stack: Stack, value: str) -> None:
    answer = stack.client.check(check_request(headers={"authorization": value}))
    assert answer.status == 400
    assert 'error="invalid_request"' in (answer.header("www-authenticate") or "")
    assert answer.body["error"] == "invalid_request"


def test_token_twice_as_separate_header_lines_is_400(stack: Stack) -> None:
    token = jwt_kit.mint(stack.key)
    request = check_request(
        raw_headers=[("authorization", f"Bearer {token}"), ("authorization", f"Bearer {token}")]
    )
    answer = stack.client.check(request)
    assert answer.status == 400
    assert answer.body["error_description"] == "credentials sent more than once"


def test_missing_scope_is_403_insufficient_scope(stack: Stack) -> None:
    token = jwt_kit.mint(stack.key, scope="orders:read")
    answer = stack.client.check(check_request("POST", "/orders", bearer(token)))
    assert answer.status == 403
    assert answer.header("www-authenticate") == (
        'Bearer realm="tollgate", error="insufficient_scope", scope="orders:write"'
    )
    assert answer.body["error"] == "insufficient_scope"


def test_scope_prefix_is_not_the_scope(stack: Stack) -> None:
    token = jwt_kit.mint(stack.key, scope="orders:writeX orders:wri")
    answer = stack.client.check(check_request("POST", "/orders", bearer(token)))
    assert answer.status == 403


def test_scp_list_claim_grants_scopes(stack: Stack) -> None:
    token = jwt_kit.mint(stack.key, scope=None, scp=["orders:write"])
    assert stack.client.check(check_request("POST", "/orders", bearer(token))).allowed


@pytest.mark.parametrize("alg", ["RS256", "PS256", "ES256", "EdDSA"])
def test_each_allowed_algorithm_verifies(stack: Stack, alg: str) -> None:
    token = jwt_kit.mint(stack.keys[alg])
    assert stack.client.check(check_request(headers=bearer(token))).allowed


def test_api_key_is_allowed_with_its_metadata(stack: Stack) -> None:
    answer = stack.client.check(check_request(headers={"x-api-key": API_KEY}))
    assert answer.allowed
    assert answer.metadata["subject"] == "svc-billing"
    assert answer.metadata["identity"] == "api_key"
    assert answer.metadata["plan"] == "gold"
    assert "x-api-key" in answer.removed


def test_wrong_api_key_is_401(stack: Stack) -> None:
    answer = stack.client.check(check_request(headers={"x-api-key": API_KEY + "x"}))
    assert answer.status == 401
    assert answer.body["error_description"] == "unknown API key"
    assert API_KEY not in answer.raw.denied_response.body


def test_mtls_principal_allowed(stack: Stack) -> None:
    answer = stack.client.check(
        check_request(path="/admin/users", principal="spiffe://tollgate.test/ns/prod/sa/admin")
    )
    assert answer.allowed
    assert answer.metadata["identity"] == "mtls"


def test_unlisted_spiffe_principal_is_403(stack: Stack) -> None:
    answer = stack.client.check(
        check_request(path="/admin/users", principal="spiffe://tollgate.test/ns/prod/sa/intruder")
    )
    assert answer.status == 403
    assert answer.body["error"] == "peer_not_allowed"


def test_xfcc_header_without_mtls_is_not_an_identity(stack: Stack) -> None:
    xfcc = 'By=spiffe://x;URI=spiffe://tollgate.test/ns/prod/sa/admin'
    answer = stack.client.check(
        check_request(path="/admin/users", headers={"x-forwarded-client-cert": xfcc})
    )
    assert answer.status == 401
    assert answer.body["error"] == "missing_credentials"


def test_public_route_is_anonymous(stack: Stack) -> None:
    answer = stack.client.check(check_request(path="/healthz"))
    assert answer.allowed
    assert answer.metadata["identity"] == "anonymous"
    assert answer.header("x-tollgate-subject") is None


def test_unmatched_route_is_denied(stack: Stack) -> None:
    token = jwt_kit.mint(stack.key)
    answer = stack.client.check(check_request("DELETE", "/orders/1", bearer(token)))
    assert answer.status == 403
    assert answer.body["error"] == "no_matching_route"


@pytest.mark.parametrize(
    "path",
    ["/healthz/../admin/x", "/healthz/%2e%2e/admin", "//admin", "/admin%2fx", "/a\\..\\admin"],
)
def test_ambiguous_paths_are_refused(stack: Stack, path: str) -> None:
    answer = stack.client.check(check_request(path=path))
    assert answer.status == 400
    assert answer.body["error_description"] == "ambiguous request path"


def test_context_extensions_select_the_route(stack: Stack) -> None:
    token = jwt_kit.mint(stack.key, scope="orders:read")
    request = check_request(
        "GET", "/anything", bearer(token), context_extensions={"tollgate_route": "orders-write"}
    )
    answer = stack.client.check(request)
    assert answer.status == 403
    assert answer.body["error"] == "insufficient_scope"
