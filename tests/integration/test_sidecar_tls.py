"""TLS to the sidecars: a real Envoy asks authz-service over mTLS through both doors
(ext_authz gRPC and http_service), the certificate is rotated on disk and served
without a restart, and a client without a certificate is refused; ratelimit-service's
gRPC listener does the same."""

from __future__ import annotations

import json
import os
import shutil
import socket
import ssl
import subprocess
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.kits import jwt_kit
from tests.kits.authz_stack import API_KEY, config_text
from tests.kits.processes import accepts, binary, free_port, stop_process, wait_for
from tollgate_cli import devcerts

pytestmark = pytest.mark.integration

TLS_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
EXT_AUTHZ = "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz"
ROUTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
HCM = ("type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
       "HttpConnectionManager")
HTTP_OPTIONS = "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions"


@dataclass
class Certs:
    dev: devcerts.DevCerts
    live_cert: Path  # what the services serve; rotated by replacing these two
    live_key: Path

    def rotate(self) -> int:
        """A new server certificate from the same CA, swapped in as a deploy does
        (write beside, rename over); returns its serial number."""
        self.dev.server_cert.unlink()
        self.dev.server_key.unlink()
        devcerts.ensure(self.dev.directory)
        for source, target in ((self.dev.server_key, self.live_key),
                               (self.dev.server_cert, self.live_cert)):
            shutil.copy(source, target.with_suffix(".new"))
            os.replace(target.with_suffix(".new"), target)
        return serial_of(self.live_cert.read_bytes())


def serial_of(pem: bytes) -> int:
    return x509.load_pem_x509_certificate(pem).serial_number


@pytest.fixture
def certs(tmp_path: Path) -> Certs:
    dev = devcerts.ensure(tmp_path / "certs")
    live = tmp_path / "live"
    live.mkdir()
    shutil.copy(dev.server_cert, live / "tls.crt")
    shutil.copy(dev.server_key, live / "tls.key")
    return Certs(dev, live / "tls.crt", live / "tls.key")


def served_serial(port: int, certs: Certs, *, alpn: str = "", client_cert: bool = True) -> int:
    """The serial of the certificate a new TLS connection to `port` is shown."""
    context = ssl.create_default_context(cafile=str(certs.dev.ca))
    if client_cert:
        context.load_cert_chain(certs.dev.client_cert("admin"), certs.dev.client_key("admin"))
    if alpn:
        context.set_alpn_protocols([alpn])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname="localhost") as tls:
        der = tls.getpeercert(binary_form=True)
        assert der is not None
        return int(x509.load_der_x509_certificate(der).serial_number)


def refused_without_a_certificate(port: int, certs: Certs) -> bool:
    """True when the server ends a connection that shows no client certificate: in
    TLS 1.3 the refusal arrives after the client's side of the handshake, at the
    first read."""
    context = ssl.create_default_context(cafile=str(certs.dev.ca))
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
                context.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
            return tls.recv(1024) == b""
    except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
        return True


def tls_flags(certs: Certs) -> list[str]:
    return ["--tls-cert", str(certs.live_cert), "--tls-key", str(certs.live_key),
            "--tls-client-ca", str(certs.dev.ca)]


def grpc_health(port: int, certs: Certs, *, client_cert: bool = True) -> int:
    key = certs.dev.client_key("admin").read_bytes() if client_cert else None
    chain = certs.dev.client_cert("admin").read_bytes() if client_cert else None
    credentials = grpc.ssl_channel_credentials(certs.dev.ca.read_bytes(), key, chain)
    with grpc.secure_channel(f"127.0.0.1:{port}", credentials,
                             options=[("grpc.ssl_target_name_override", "localhost")]) as ch:
        answer = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(),
                                                      timeout=5)
        return int(answer.status)


@contextmanager
def running(command: list[str], workdir: Path, name: str, port: int,
            certs: Certs) -> Iterator[subprocess.Popen[bytes]]:
    log_path = workdir / f"{name}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)

    def answering() -> bool:
        if proc.poll() is not None:
            return True
        try:
            served_serial(port, certs, alpn="h2")
        except OSError:
            return False
        return True

    try:
        wait_for(answering, timeout=30, what=f"{name} serving TLS")
        if proc.poll() is not None:
            raise AssertionError(f"{name} exited: {log_path.read_text()}")
        yield proc
    finally:
        stop_process(proc)


def envoy_config(listen: int, admin: int, grpc_port: int, http_port: int,
                 certs: Certs) -> dict[str, object]:
    def tls(alpn: list[str]) -> dict[str, object]:
        return {"name": "envoy.transport_sockets.tls", "typed_config": {
            "@type": TLS_TYPE, "sni": "localhost",
            "common_tls_context": {
                "alpn_protocols": alpn,
                "tls_certificates": [{
                    "certificate_chain": {"filename": str(certs.dev.client_cert("admin"))},
                    "private_key": {"filename": str(certs.dev.client_key("admin"))}}],
                "validation_context": {
                    "trusted_ca": {"filename": str(certs.dev.ca)},
                    "match_typed_subject_alt_names": [
                        {"san_type": "DNS", "matcher": {"exact": "localhost"}}]}}}}

    def cluster(name: str, port: int, *, http2: bool) -> dict[str, object]:
        built: dict[str, object] = {
            "name": name, "type": "STATIC", "connect_timeout": "2s",
            "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
                {"endpoint": {"address": {"socket_address": {
                    "address": "127.0.0.1", "port_value": port}}}}]}]},
            "transport_socket": tls(["h2"] if http2 else ["http/1.1"]),
        }
        if http2:
            built["typed_extension_protocol_options"] = {
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                    "@type": HTTP_OPTIONS, "explicit_http_config": {"http2_protocol_options": {}}}}
        return built

    def per_route(door: str) -> dict[str, object]:
        # One Envoy, one ext_authz filter per door; each route turns the other off.
        other = "grpc" if door == "http" else "http"
        return {f"envoy.filters.http.ext_authz.{other}": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3."
                     "ExtAuthzPerRoute", "disabled": True}}

    filters = [
        {"name": "envoy.filters.http.ext_authz.grpc", "typed_config": {
            "@type": EXT_AUTHZ, "transport_api_version": "V3",
            "grpc_service": {"envoy_grpc": {"cluster_name": "authz_grpc"}, "timeout": "2s"}}},
        {"name": "envoy.filters.http.ext_authz.http", "typed_config": {
            "@type": EXT_AUTHZ, "transport_api_version": "V3",
            "http_service": {
                "server_uri": {"uri": "https://localhost", "cluster": "authz_http",
                               "timeout": "2s"},
                "path_prefix": "/check"},
            "allowed_headers": {"patterns": [{"exact": "x-api-key"}]}}},
        {"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER}},
    ]
    routes = [
        {"match": {"prefix": "/", "headers": [
            {"name": "x-door", "string_match": {"exact": door}}]}, "direct_response": {
            "status": 200, "body": {"inline_string": door}},
         "typed_per_filter_config": per_route(door)}
        for door in ("grpc", "http")
    ]
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        "static_resources": {
            "listeners": [{"name": "main", "address": {"socket_address": {
                "address": "127.0.0.1", "port_value": listen}},
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {"@type": HCM, "stat_prefix": "in", "http_filters": filters,
                                     "route_config": {"virtual_hosts": [{
                                         "name": "all", "domains": ["*"],
                                         "routes": routes}]}}}]}]}],
            "clusters": [cluster("authz_grpc", grpc_port, http2=True),
                         cluster("authz_http", http_port, http2=False)],
        },
    }


def through(envoy_port: int, door: str, headers: dict[str, str]) -> int:
    """Envoy's answer to GET /orders/1, asking authz through `door` (grpc or http)."""
    request = urllib.request.Request(f"http://127.0.0.1:{envoy_port}/orders/1",
                                     headers={**headers, "x-door": door})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310 - http://
            return int(answer.status)
    except urllib.error.HTTPError as denied:
        return int(denied.code)


def test_envoy_asks_authz_over_mtls_through_both_doors_across_a_rotation(
    tmp_path: Path, certs: Certs
) -> None:
    key = jwt_kit.rsa_key("tls-1")
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps(jwt_kit.jwks(key)))
    config = tmp_path / "authz.yaml"
    config.write_text(config_text(jwks))
    grpc_port, http_port, listen, admin = (free_port() for _ in range(4))
    authz = [binary("authz-service"), "--config", str(config),
             "--grpc-address", f"127.0.0.1:{grpc_port}",
             "--http-address", f"127.0.0.1:{http_port}",
             "--reload-interval", "0.05", *tls_flags(certs)]
    envoy_file = tmp_path / "envoy.json"
    envoy_file.write_text(json.dumps(envoy_config(listen, admin, grpc_port, http_port, certs)))
    with running(authz, tmp_path, "authz", grpc_port, certs):
        # `running` waits on the gRPC door; the HTTP door's listener may come up after it.
        wait_for(lambda: accepts(http_port), 20, "the HTTP door's listener")
        first = served_serial(http_port, certs)
        assert served_serial(grpc_port, certs, alpn="h2") == first
        with (tmp_path / "envoy.log").open("wb") as log:
            envoy = subprocess.Popen(
                [binary("envoy"), "-c", str(envoy_file), "--concurrency", "1",
                 "--log-level", "warning", "--disable-hot-restart"],
                stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_for(lambda: envoy.poll() is not None or _ready(admin), 30, "envoy ready")
            assert envoy.poll() is None, (tmp_path / "envoy.log").read_text()
            for door in ("grpc", "http"):
                assert through(listen, door, {"x-api-key": API_KEY}) == 200
                assert through(listen, door, {}) == 401

            rotated = certs.rotate()
            assert rotated != first
            wait_for(lambda: served_serial(http_port, certs) == rotated, 10,
                     "the HTTP door serving the new certificate")
            wait_for(lambda: served_serial(grpc_port, certs, alpn="h2") == rotated, 10,
                     "the gRPC door serving the new certificate")
            for door in ("grpc", "http"):  # Envoy's connections, old or new, still work
                assert through(listen, door, {"x-api-key": API_KEY}) == 200
        finally:
            stop_process(envoy)
        assert refused_without_a_certificate(http_port, certs)
        with pytest.raises(grpc.RpcError) as no_cert:
            grpc_health(grpc_port, certs, client_cert=False)
        assert no_cert.value.code() == grpc.StatusCode.UNAVAILABLE
        assert grpc_health(grpc_port, certs) == health_pb2.HealthCheckResponse.SERVING


def test_ratelimit_service_serves_grpc_over_mtls_and_rotates(
    tmp_path: Path, certs: Certs
) -> None:
    port = free_port()
    command = [binary("ratelimit-service"), "--grpc-address", f"127.0.0.1:{port}",
               "--reload-interval", "0.05", *tls_flags(certs)]
    with running(command, tmp_path, "ratelimit", port, certs):
        assert grpc_health(port, certs) == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as no_cert:
            grpc_health(port, certs, client_cert=False)
        assert no_cert.value.code() == grpc.StatusCode.UNAVAILABLE
        rotated = certs.rotate()
        wait_for(lambda: served_serial(port, certs, alpn="h2") == rotated, 10,
                 "ratelimit-service serving the new certificate")
        assert grpc_health(port, certs) == health_pb2.HealthCheckResponse.SERVING


def test_a_broken_certificate_file_stops_the_start_with_its_name(
    tmp_path: Path, certs: Certs
) -> None:
    certs.live_key.write_text("not a key")
    done = subprocess.run(
        [binary("ratelimit-service"), "--grpc-address", f"127.0.0.1:{free_port()}",
         *tls_flags(certs)], capture_output=True, timeout=30, check=False)
    assert done.returncode == 2
    assert f"{certs.live_key}: not an unencrypted PEM private key" in done.stderr.decode()


def _ready(admin: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{admin}/ready", timeout=1) as answer:
            return bool(answer.status == 200)
    except OSError:
        return False
