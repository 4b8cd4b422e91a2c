"""Edges of the Envoy wiring that test_through_envoy.py leaves open.

The mTLS listener's own gate (no certificate, no request), traversal tried by a
verified but unlisted peer, proof that Envoy rewrites the path (not merely that the
rewritten request is denied), and the default deny for routes no policy names.
"""

from __future__ import annotations

import http.client
import ssl

import pytest

from tollgate_cli import token
from tollgate_cli.stack import Stack, request

pytestmark = pytest.mark.integration


def test_mtls_listener_refuses_a_client_without_a_certificate(stack: Stack) -> None:
    # TLS 1.3 reports "certificate required" after the handshake, on the first read.
    with pytest.raises((ssl.SSLError, ConnectionError, http.client.RemoteDisconnected)):
        request(stack.options.mtls_port, "GET", "/healthz", ca=stack.ca)


@pytest.mark.parametrize("path", [
    "/public/../admin/settings", "/public/%2e%2e/admin/settings", "//admin/settings",
    "/./admin/settings",
])
def test_traversal_by_an_unlisted_peer_is_refused(stack: Stack, path: str) -> None:
    answer = request(stack.options.mtls_port, "GET", path, ca=stack.ca, client="intruder")
    assert answer.status in (400, 403), (answer.status, answer.body[:200])
    assert b'"path"' not in answer.body  # nothing from the upstream


def test_the_upstream_sees_the_normalised_path(stack: Stack) -> None:
    # The admin peer may reach /admin, so this shows what Envoy forwards: the path the
    # route and the authz policy were matched on, not the one the client wrote.
    answer = request(stack.options.mtls_port, "GET", "/public/%2e%2e//admin/./settings",
                     ca=stack.ca, client="admin")
    assert answer.status == 200, answer.body[:200]
    assert answer.json()["path"] == "/admin/settings"


def test_a_route_no_policy_names_is_denied(stack: Stack) -> None:
    bearer = token.mint(stack.run_dir, sub="leo", scope="orders:read orders:write admin")
    answer = request(stack.options.https_port, "GET", "/internal/secrets", ca=stack.ca,
                     headers={"authorization": f"Bearer {bearer}"})
    assert answer.status == 403
    assert b'"path"' not in answer.body
