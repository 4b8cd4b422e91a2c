"""Request validation through real Envoy: ext_authz buffers the body on the schema route only.

The Envoy YAML here is the shape docs/authz.md asks the shipped config to take:
filter-level ext_authz without body buffering, and per-route `check_settings` with
`with_request_body` (max bytes, pack_as_bytes) and `context_extensions` on the
routes whose policy has a `validate:` block.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.kits.grpc_kit import authz_process
from tests.kits.processes import binary, free_port, stop_process, wait_for

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

ENVOY = """
static_resources:
  listeners:
  - name: main
    address: {socket_address: {address: 127.0.0.1, port_value: %(port)d}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          normalize_path: true
          merge_slashes: true
          path_with_escaped_slashes_action: REJECT_REQUEST
          route_config:
            virtual_hosts:
            - name: api
              domains: ["*"]
              routes:
              - match: {prefix: /orders}
                direct_response: {status: 200, body: {inline_string: upstream}}
                typed_per_filter_config:
                  envoy.filters.http.ext_authz:
                    "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute
                    check_settings:
                      context_extensions: {tollgate_route: orders-api}
                      with_request_body:
                        max_request_bytes: %(max_body)d
                        allow_partial_message: true
                        pack_as_bytes: true
              - match: {prefix: /}
                direct_response: {status: 200, body: {inline_string: upstream}}
          http_filters:
          - name: envoy.filters.http.ext_authz
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz
              transport_api_version: V3
              encode_raw_headers: true
              failure_mode_allow: false
              grpc_service:
                envoy_grpc: {cluster_name: authz}
                timeout: 2s
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: authz
    type: STATIC
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {http2_protocol_options: {}}
    load_assignment:
      cluster_name: authz
      endpoints:
      - lb_endpoints:
        - endpoint: {address: {pipe: {path: "%(socket)s"}}}
"""  # noqa: E501 (Envoy type URLs)


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
    port = free_port()
    envoy_yaml = workdir / "envoy.yaml"
    envoy_yaml.write_text(
        ENVOY % {"port": port, "max_body": MAX_BODY, "socket": workdir / "authz.sock"}
    )
    with authz_process(workdir / "authz.yaml", workdir), (workdir / "envoy.log").open("wb") as log:
        proc = subprocess.Popen(
            [binary("envoy"), "-c", str(envoy_yaml), "--concurrency", "1",
             "--disable-hot-restart", "-l", "warning"],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            client = Envoy(port)

            def ready() -> bool:
                if proc.poll() is not None:
                    raise AssertionError((workdir / "envoy.log").read_text())
                try:
                    return client.request("GET", "/ready")[0] == 200
                except OSError:
                    return False

            wait_for(ready, timeout=30, what="envoy listening")
            yield client
        finally:
            stop_process(proc)


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
