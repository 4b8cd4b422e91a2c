"""Sender-constrained tokens through a real Envoy, both layouts: RFC 8705 tokens bound to
the mTLS client certificate Envoy verified (HTTP door: %DOWNSTREAM_PEER_FINGERPRINT_256%;
gRPC: include_peer_certificate), and RFC 9449 DPoP proofs checked against the request
as Envoy normalised it."""

from __future__ import annotations

import base64

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from tests.kits import dpop_kit, jwt_kit
from tollgate_cli import token
from tollgate_cli.stack import Response, Stack, request

pytestmark = pytest.mark.integration
PROOF_KEY = jwt_kit.ec_key("client")


def thumbprint(stack: Stack, client: str) -> str:
    pem = (stack.run_dir / f"{client}.crt").read_bytes()
    return jwt_kit.b64(x509.load_pem_x509_certificate(pem).fingerprint(hashes.SHA256()))


def mint(stack: Stack, sub: str, **cnf: str) -> str:
    return token.mint(stack.run_dir, sub=sub, plan="gold", cnf=cnf)


def https(stack: Stack, path: str, headers: dict[str, str], method: str = "GET") -> Response:
    return request(stack.options.https_port, method, path, ca=stack.ca, headers=headers)


def url(stack: Stack, path: str) -> str:
    return f"https://localhost:{stack.options.https_port}{path}"


def dpop(access: str, proof: str) -> dict[str, str]:
    return {"authorization": f"DPoP {access}", "dpop": proof}


# --- RFC 8705 ---------------------------------------------------------------------------


def test_a_certificate_bound_token_passes_with_its_certificate(stack: Stack) -> None:
    bound = mint(stack, "bound-admin", **{"x5t#S256": thumbprint(stack, "admin")})
    answer = request(stack.options.mtls_port, "GET", "/orders/42", ca=stack.ca, client="admin",
                     headers={"authorization": f"Bearer {bound}"})
    assert answer.status == 200, answer.body
    assert answer.json()["headers"]["x-tollgate-subject"] == "bound-admin"  # type: ignore[index]


def test_a_certificate_bound_token_from_another_certificate_is_refused(stack: Stack) -> None:
    bound = mint(stack, "bound-stolen", **{"x5t#S256": thumbprint(stack, "admin")})
    answer = request(stack.options.mtls_port, "GET", "/orders/42", ca=stack.ca,
                     client="intruder", headers={"authorization": f"Bearer {bound}"})
    assert answer.status == 401
    assert answer.json()["error_description"] == "token is bound to another client certificate"
    # and without any client certificate (the TLS-only listener)
    answer = https(stack, "/orders/42", {"authorization": f"Bearer {bound}"})
    assert answer.status == 401
    assert "none was presented" in str(answer.json()["error_description"])


def test_a_client_cannot_claim_a_certificate_with_a_header(stack: Stack) -> None:
    bound = mint(stack, "bound-forged", **{"x5t#S256": thumbprint(stack, "admin")})
    admin_hex = base64.urlsafe_b64decode(thumbprint(stack, "admin") + "=").hex()
    forged = {"authorization": f"Bearer {bound}", "x-tollgate-attr-peer-cert-sha256": admin_hex,
              "x-forwarded-client-cert": f"Hash={admin_hex}"}
    answer = https(stack, "/orders/42", forged)
    assert answer.status == 401


# --- RFC 9449 ---------------------------------------------------------------------------


def test_a_dpop_bound_token_with_its_proof_passes_and_neither_reaches_the_upstream(
        stack: Stack) -> None:
    access = mint(stack, "dpop-ok", jkt=dpop_kit.thumbprint(dpop_kit.proof_jwk(PROOF_KEY)))
    proof = dpop_kit.proof(PROOF_KEY, "GET", url(stack, "/orders/42"), access)
    answer = https(stack, "/orders/42", dpop(access, proof))
    assert answer.status == 200, answer.body
    seen = answer.json()["headers"]
    assert isinstance(seen, dict)
    assert seen["x-tollgate-subject"] == "dpop-ok"
    assert "authorization" not in seen
    assert "dpop" not in seen


def test_a_replayed_proof_is_refused_with_a_dpop_challenge(stack: Stack) -> None:
    access = mint(stack, "dpop-replay", jkt=dpop_kit.thumbprint(dpop_kit.proof_jwk(PROOF_KEY)))
    headers = dpop(access, dpop_kit.proof(PROOF_KEY, "GET", url(stack, "/orders/42"), access))
    assert https(stack, "/orders/42", headers).status == 200
    again = https(stack, "/orders/42", headers)
    assert again.status == 401
    challenge = again.headers["www-authenticate"]
    assert challenge.startswith('DPoP realm="tollgate", error="invalid_dpop_proof"')
    assert "algs=" in challenge
    assert again.json()["error"] == "invalid_dpop_proof"


def test_a_proof_for_another_url_or_method_is_refused(stack: Stack) -> None:
    access = mint(stack, "dpop-other", jkt=dpop_kit.thumbprint(dpop_kit.proof_jwk(PROOF_KEY)))
    for method, target in (("GET", "/orders/43"), ("POST", "/orders/42")):
        proof = dpop_kit.proof(PROOF_KEY, method, url(stack, target), access)
        answer = https(stack, "/orders/42", dpop(access, proof))
        assert answer.status == 401
        assert answer.json()["error"] == "invalid_dpop_proof"


def test_htu_is_compared_with_the_path_envoy_normalised(stack: Stack) -> None:
    access = mint(stack, "dpop-norm", jkt=dpop_kit.thumbprint(dpop_kit.proof_jwk(PROOF_KEY)))
    # The client signs the URL it sends; Envoy turns /orders/./x/../42 into /orders/42.
    proof = dpop_kit.proof(PROOF_KEY, "GET", url(stack, "/orders/./x/../42?page=1"), access)
    answer = https(stack, "/orders/./x/../42?page=1", dpop(access, proof))
    assert answer.status == 200, answer.body
    assert answer.json()["path"] == "/orders/42?page=1"


def test_a_dpop_bound_token_sent_as_a_bearer_token_is_refused(stack: Stack) -> None:
    access = mint(stack, "dpop-bearer", jkt=dpop_kit.thumbprint(dpop_kit.proof_jwk(PROOF_KEY)))
    answer = https(stack, "/orders/42", {"authorization": f"Bearer {access}"})
    assert answer.status == 401
    assert answer.headers["www-authenticate"].startswith("DPoP ")
    assert answer.json()["error_description"] == "DPoP-bound token sent as a bearer token"
