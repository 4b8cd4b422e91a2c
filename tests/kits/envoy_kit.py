"""A real Envoy in front of authz-service's gRPC door (a Unix socket): ext_authz on every
route, a direct 200 `upstream` answer behind it, path normalisation on. The `/orders`
routes name the `orders-api` route policy and send the body (up to `max_body` bytes)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.kits.processes import accepts, binary, free_port, stop_process, wait_for

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
                timeout: %(timeout)s
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


@contextmanager
def envoy_in_front(
    workdir: Path, authz_socket: Path, *, max_body: int = 4096, timeout: str = "2s"
) -> Iterator[int]:
    """Run Envoy with this config; yield its listener's port once it accepts connections."""
    port = free_port()
    config = workdir / "envoy.yaml"
    config.write_text(ENVOY % {"port": port, "max_body": max_body, "socket": authz_socket,
                               "timeout": timeout})
    log_path = workdir / "envoy.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [binary("envoy"), "-c", str(config), "--concurrency", "1",
             "--disable-hot-restart", "-l", "warning"],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        def listening() -> bool:
            if proc.poll() is not None:
                raise AssertionError(log_path.read_text())
            return accepts(port)

        wait_for(listening, timeout=30, what="envoy listening")
        yield port
    finally:
        stop_process(proc)
