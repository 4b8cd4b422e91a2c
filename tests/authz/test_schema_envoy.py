"""Request validation through real Envoy: ext_authz buffers the body on the schema route only.

The Envoy YAML (tests/authz/envoy_kit.py) is the shape docs/authz.md asks the shipped
config to take: filter-level ext_authz without body buffering, and per-route `check_settings` with
`with_request_body` (max bytes, pack_as_bytes) and `context_extensions` on the
routes whose policy has a `validate:` block.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.kits.envoy_kit import envoy_in_front
from tests.kits.grpc_kit import authz_process
from tests.kits.processes import wait_for

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).parent / "fixtures"
KEY = "tg_envoy_schema_0123456789"
IDEMPOTENCY = "5f0c6e1e-8a6b-4c1e-9d1f-2b3a4c5d6e7f"
MAX_BODY = 4096

AUTHZ = f"""
identities:
  - name: partners
    api_key:
      keys: [{{id: k1, sha256: {hashlib.sha256(KEY.encode()).hexdigest()}, subject: svc}}]
routes:
  - name: orders-api
    match: {{path: {{prefix: /orders}}}}
    identities: [partners]
    validate:
      openapi: {{file: orders.openapi.yaml}}
      max_body_bytes: {MAX_BODY}
  - name: misconfigured
    match: {{path: {{prefix: /unbuffered}}}}
    identities: [partners]
    validate: {{schema: {{type: object}}, body_required: false}}
  - name: other
    match: {{path: {{prefix: /}}}}
    identities: [partners]
"""


class Envoy:
    def __init__(self, port: int) -> None:
        self.port = port

    def request(
        self, method: str, path: str, body: bytes | None = None, **headers: str
    ) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            hdrs = {"x-api-key": KEY, **{k.replace("_", "-"): v for k, v in headers.items()}}
            conn.request(method, path, body=body, headers=hdrs)
            response = conn.getresponse()
            return (
                response.status,
                {k.lower(): v for k, v in response.getheaders()},
                response.read(),
            )
        finally:
            conn.close()


@pytest.fixture(scope="module")
def envoy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Envoy]:
    workdir = tmp_path_factory.mktemp("envoy-schema")
    shutil.copy(FIXTURES / "orders.openapi.yaml", workdir)
    (workdir / "authz.yaml").write_text(AUTHZ)
    with authz_process(workdir / "authz.yaml", workdir), \
            envoy_in_front(workdir, workdir / "authz.sock", max_body=MAX_BODY) as port:
        client = Envoy(port)

        def ready() -> bool:
            try:
                return client.request("GET", "/ready")[0] == 200
            except OSError:
                return False

        wait_for(ready, timeout=30, what="envoy and authz answering")
        yield client


def order(**patch: object) -> bytes:
    body = {"customer_id": "c-1", "email": "a@b.test", "currency": "EUR",
            "items": [{"sku": "ABC-0001", "quantity": 1}]}
    return json.dumps({**body, **patch}).encode()


def post(envoy: Envoy, body: bytes, **headers: str) -> tuple[int, dict[str, str], bytes]:
    defaults = {"content_type": "application/json", "idempotency_key": IDEMPOTENCY}
    return envoy.request("POST", "/orders", body, **{**defaults, **headers})


def test_valid_order_reaches_the_upstream(envoy: Envoy) -> None:
    status, _, body = post(envoy, order())
    assert (status, body) == (200, b"upstream")


def test_invalid_order_is_400_problem_json(envoy: Envoy) -> None:
    status, headers, body = post(envoy, order(items=[{"sku": "ABC-0001", "quantity": 0}]))
    assert status == 400
    assert headers["content-type"] == "application/problem+json"
    problem = json.loads(body)
    assert (problem["code"], problem["pointer"]) == ("schema_violation", "/items/0/quantity")


def test_query_parameter_is_validated(envoy: Envoy) -> None:
    status, _, body = envoy.request("GET", "/orders?limit=1000")
    assert status == 400
    assert json.loads(body)["parameter"] == "query:limit"


def test_body_over_the_buffer_is_denied_never_validated_as_whole(envoy: Envoy) -> None:
    big = order(note=None, tags=[], customer_id="c" * 60) + b" " * (MAX_BODY + 100)
    status, _, body = post(envoy, big)
    assert status == 413
    assert json.loads(body)["code"] == "body_truncated"  # x-envoy-auth-partial-body: true


def test_wrong_media_type_is_415(envoy: Envoy) -> None:
    status, _, body = post(envoy, order(), content_type="text/plain")
    assert status == 415
    assert json.loads(body)["code"] == "unsupported_media_type"


def test_validated_route_envoy_does_not_buffer_fails_closed(envoy: Envoy) -> None:
    # An Envoy route missing with_request_body must not let bodies through unseen.
    status, _, body = envoy.request("POST", "/unbuffered", b"{not json",
                                    content_type="application/json")
    assert status == 500
    assert json.loads(body)["code"] == "body_not_buffered"


def test_route_without_schema_is_not_buffered_or_validated(envoy: Envoy) -> None:
    status, _, body = envoy.request("POST", "/notes", b"{not json", content_type="text/plain")
    assert (status, body) == (200, b"upstream")
