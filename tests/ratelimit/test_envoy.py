"""A real Envoy's ratelimit filter against ratelimit-service on its embedded default.

Envoy builds the descriptors the local stack sends ([plan, subject] and
[remote_address]) from request headers, calls ShouldRateLimit, and answers 429 when
the service says OVER_LIMIT, adding the service's X-RateLimit-* headers.
"""

from __future__ import annotations

import http.server
import json
import subprocess
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.kits.processes import binary, free_port, stop_process, wait_for
from tests.kits.ratelimit_proc import ServiceProcess

pytestmark = pytest.mark.integration  # real processes: redis-server, Envoy, the service


class _Upstream(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: object) -> None:
        del args


@pytest.fixture
def upstream() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Upstream)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def envoy_config(listen: int, admin: int, upstream: int, ratelimit: str) -> dict[str, object]:
    host, _, port = ratelimit.rpartition(":")

    def cluster(name: str, port: int, *, http2: bool, address: str = "127.0.0.1") -> object:
        c: dict[str, object] = {
            "name": name, "type": "STATIC", "connect_timeout": "1s",
            "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [{
                "endpoint": {"address": {"socket_address": {
                    "address": address, "port_value": port}}}}]}]},
        }
        if http2:
            c["typed_extension_protocol_options"] = {
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                    "@type": "type.googleapis.com/"
                             "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                    "explicit_http_config": {"http2_protocol_options": {}},
                }
            }
        return c

    route = {
        "match": {"prefix": "/"},
        "route": {
            "cluster": "upstream",
            "rate_limits": [
                {"actions": [
                    {"request_headers": {"header_name": "x-plan", "descriptor_key": "plan"}},
                    {"request_headers": {"header_name": "x-subject",
                                         "descriptor_key": "subject"}},
                ]},
                {"actions": [{"remote_address": {}}]},
            ],
        },
    }
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        "static_resources": {
            "listeners": [{
                "name": "main",
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": listen}},
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network."
                                 "http_connection_manager.v3.HttpConnectionManager",
                        "stat_prefix": "main",
                        "route_config": {"virtual_hosts": [
                            {"name": "all", "domains": ["*"], "routes": [route]}]},
                        "http_filters": [
                            {"name": "envoy.filters.http.ratelimit", "typed_config": {
                                "@type": "type.googleapis.com/envoy.extensions.filters.http."
                                         "ratelimit.v3.RateLimit",
                                "domain": "tollgate",
                                "failure_mode_deny": True,
                                "timeout": "2s",
                                "rate_limit_service": {
                                    "grpc_service": {"envoy_grpc": {"cluster_name": "ratelimit"}},
                                    "transport_api_version": "V3",
                                },
                            }},
                            {"name": "envoy.filters.http.router", "typed_config": {
                                "@type": "type.googleapis.com/envoy.extensions.filters.http."
                                         "router.v3.Router"}},
                        ],
                    },
                }]}],
            }],
            "clusters": [
                cluster("upstream", upstream, http2=False),
                cluster("ratelimit", int(port), http2=True, address=host),
            ],
        },
    }


def get(url: str, headers: dict[str, str]) -> tuple[int, dict[str, str]]:
    req = urllib.request.Request(url, headers=headers)  # noqa: S310 - a local test URL
    try:
        with urllib.request.urlopen(req, timeout=10) as response:  # noqa: S310
            return response.status, dict(response.headers)
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers)


def test_envoy_enforces_the_embedded_default(upstream: int, tmp_path: Path) -> None:
    service = ServiceProcess(["--response-headers"])
    listen, admin = free_port(), free_port()
    config = tmp_path / "envoy.json"
    config.write_text(json.dumps(envoy_config(listen, admin, upstream, service.address)))
    envoy = subprocess.Popen(
        [binary("envoy"), "-c", str(config), "--concurrency", "1", "--log-level", "error",
         "--disable-hot-restart"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{listen}/orders/1"
        wait_for(lambda: _ready(admin), 30, "envoy to be ready")
        free = {"x-subject": "alice", "x-plan": "free"}
        results = [get(url, free) for _ in range(6)]
        assert [status for status, _ in results] == [200] * 5 + [429]
        headers = {k.lower(): v for k, v in results[0][1].items()}
        assert headers["x-ratelimit-limit"] == "5"
        assert headers["x-ratelimit-remaining"] == "4"
        over = {k.lower(): v for k, v in results[5][1].items()}
        assert over["x-ratelimit-remaining"] == "0"
        # Another subject, and a gold subject, have their own counters.
        assert get(url, {"x-subject": "bob", "x-plan": "free"})[0] == 200
        gold = get(url, {"x-subject": "alice", "x-plan": "gold"})
        assert gold[0] == 200
        assert {k.lower(): v for k, v in gold[1].items()}["x-ratelimit-limit"] == "50"
    finally:
        stop_process(envoy)  # type: ignore[arg-type]
        service.stop()


def _ready(admin: int) -> bool:
    try:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{admin}/ready", timeout=1
        ) as response:
            return bool(response.status == 200)
    except OSError:
        return False
