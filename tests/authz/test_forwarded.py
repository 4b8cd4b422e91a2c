"""Forwarded checks (doors/forwarded.py): who is believed, what is read, what is refused.
The context builder is pure; the door's refusals are checked on a real process."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from authz_service.doors.forwarded import (
    CONVENTIONS,
    DENIAL_BODY_HEADER,
    Forwarding,
    ForwardRefused,
    TrustedForwarders,
)
from authz_service.doors.http_wire import NotACheck
from authz_service.models import Deny, RequestContext
from tests.kits import jwt_kit
from tests.kits.authz_stack import config_text
from tests.kits.door_kit import HttpDoorClient
from tests.kits.grpc_kit import authz_process
from tests.kits.processes import binary, free_port
from tollgate.http_server import HttpRequest

NGINX = {"x-original-method": "POST", "x-original-uri": "/orders?x=1",
         "x-forwarded-for": "203.0.113.7", "x-forwarded-host": "api.test",
         "x-forwarded-proto": "https"}
TRAEFIK = {"x-forwarded-method": "GET", "x-forwarded-uri": "/orders/1",
           "x-forwarded-for": "203.0.113.7", "x-forwarded-host": "api.test",
           "x-forwarded-proto": "http"}


def request(headers: dict[str, str] | list[tuple[str, str]], *, peer: str = "127.0.0.1",
            target: str = "/check", method: str = "GET") -> HttpRequest:
    lines = list(headers.items()) if isinstance(headers, dict) else headers
    return HttpRequest(method, target, [("host", "tollgate"), *lines], b"", peer, True)


def forwarding(kind: str = "nginx", trusted: str = "127.0.0.1/32") -> Forwarding:
    return Forwarding(CONVENTIONS[kind], TrustedForwarders.parse(trusted))


def context(req: HttpRequest, kind: str = "nginx", trusted: str = "127.0.0.1/32"
            ) -> RequestContext:
    return forwarding(kind, trusted).context(req, "/check")


def refusal(req: HttpRequest, kind: str = "nginx", trusted: str = "127.0.0.1/32"
            ) -> tuple[int, dict[str, object]]:
    with pytest.raises(ForwardRefused) as refused:
        context(req, kind, trusted)
    head, _, body = refused.value.response.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def test_nginx_names_the_clients_request_in_x_original_headers() -> None:
    ctx = context(request(NGINX))
    assert (ctx.method, ctx.path, ctx.query) == ("POST", "/orders", "x=1")
    assert (ctx.host, ctx.scheme, ctx.source_address) == ("api.test", "https", "203.0.113.7")
    assert ctx.headers["host"] == "api.test"
    assert "x-original-uri" not in ctx.headers and "x-forwarded-for" not in ctx.headers


def test_traefik_names_it_in_x_forwarded_headers() -> None:
    ctx = context(request(TRAEFIK), "traefik")
    assert (ctx.method, ctx.path, ctx.scheme) == ("GET", "/orders/1", "http")


def test_the_client_address_is_the_one_the_forwarder_saw() -> None:
    chain = {**NGINX, "x-forwarded-for": "198.51.100.1, 10.1.2.3, 203.0.113.7"}
    assert context(request(chain)).source_address == "203.0.113.7"


def test_a_peer_outside_the_trusted_forwarders_is_refused_whatever_it_sends() -> None:
    status, body = refusal(request(NGINX, peer="10.9.9.9"))
    assert (status, body["error"]) == (403, "untrusted_forwarder")
    status, body = refusal(request(NGINX, peer=""))  # the Unix socket, not trusted here
    assert body["error"] == "untrusted_forwarder"


def test_trusted_forwarders_are_networks_addresses_and_the_unix_socket() -> None:
    trusted = TrustedForwarders.parse("10.0.0.0/8, ::1, unix")
    assert trusted.trusts("10.200.0.1") and trusted.trusts("::1") and trusted.trusts("")
    assert trusted.trusts("::ffff:10.0.0.5")  # a v4 peer on a dual-stack socket
    assert not trusted.trusts("11.0.0.1") and not trusted.trusts("::2")
    assert not TrustedForwarders.parse("127.0.0.1").trusts("")


@pytest.mark.parametrize("text, message", [
    ("10.0.0.1/8", "'10.0.0.1/8' is not a CIDR"),
    ("localhost", "'localhost' is not a CIDR"),
    (" , ", "no trusted forwarder given"),
])
def test_a_bad_trusted_forwarder_list_is_named(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TrustedForwarders.parse(text)


@pytest.mark.parametrize("change, why", [
    ({"x-original-uri": None}, "no x-original-uri"),
    ({"x-original-uri": "https://evil.test/orders"}, "no x-original-uri"),
    ({"x-original-method": None}, "no valid x-original-method"),
    ({"x-original-method": "GE T"}, "no valid x-original-method"),
    ({"x-forwarded-for": None}, "no client address"),
    ({"x-forwarded-for": "unknown"}, "no client address"),
    ({"x-forwarded-proto": "gopher"}, "neither http nor https"),
])
def test_a_trusted_forwarder_that_leaves_a_header_out_is_refused(
    change: dict[str, str | None], why: str
) -> None:
    headers = {k: v for k, v in {**NGINX, **change}.items() if v is not None}
    status, body = refusal(request(headers))  # type: ignore[arg-type]
    assert (status, body["error"]) == (400, "invalid_request")
    assert why in str(body["error_description"])


def test_a_forwarded_header_sent_twice_is_refused() -> None:
    lines = [*NGINX.items(), ("x-original-uri", "/admin")]
    status, body = refusal(request(lines))
    assert status == 400 and "x-original-uri sent more than once" in str(
        body["error_description"])


def test_envoys_attribute_headers_are_never_believed_from_a_forwarder() -> None:
    ctx = context(request({**NGINX,
                           "x-tollgate-attr-peer-principal": "spiffe://t/ns/a/sa/admin",
                           "x-tollgate-attr-source-address": "10.0.0.1",
                           "x-tollgate-attr-route": "admin"}))
    assert ctx.peer_principal == "" and not ctx.peer_certificate
    assert ctx.source_address == "203.0.113.7" and not ctx.context_extensions


def test_only_the_path_prefix_is_a_check() -> None:
    assert context(request(NGINX, target="/check/anything?x")).path == "/orders"
    with pytest.raises(NotACheck):
        context(request(NGINX, target="/ready"))


def test_nginx_gets_the_denial_body_in_a_header_too() -> None:
    deny = Deny(401, "missing_credentials", "authentication required", 'Bearer realm="t"')
    nginx = forwarding("nginx").deny(deny, "rid-1")
    traefik = forwarding("traefik").deny(deny, "rid-1")
    head, _, body = nginx.partition(b"\r\n\r\n")
    assert f"{DENIAL_BODY_HEADER}: ".encode() + body in head.split(b"\r\n")
    assert DENIAL_BODY_HEADER.encode() not in traefik
    assert traefik.partition(b"\r\n\r\n")[2] == body


@pytest.mark.integration
def test_the_door_refuses_forwarded_checks_from_an_untrusted_tcp_peer(tmp_path: Path) -> None:
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps(jwt_kit.jwks(jwt_kit.ec_key("fwd-1"))))
    config = tmp_path / "authz.yaml"
    config.write_text(config_text(jwks))
    port = free_port()
    env = {"AUTHZ_HTTP_FORWARDED": "traefik", "AUTHZ_HTTP_TRUSTED_FORWARDERS": "10.0.0.0/8"}
    with authz_process(config, tmp_path, env, http_address=f"127.0.0.1:{port}"):
        client = HttpDoorClient(f"127.0.0.1:{port}")
        try:
            lines = "".join(f"{k}: {v}\r\n" for k, v in TRAEFIK.items())
            reply = client.exchange(f"GET /check HTTP/1.1\r\nhost: t\r\n{lines}\r\n".encode())
            ready = client.exchange(b"GET /healthz HTTP/1.1\r\nhost: t\r\n\r\n")
        finally:
            client.close()
    assert reply.status == 403 and json.loads(reply.body)["error"] == "untrusted_forwarder"
    assert ready.status == 200  # health is no forwarded check


@pytest.mark.integration
@pytest.mark.parametrize("flags, message", [
    (["--http-forwarded", "nginx"], "--http-trusted-forwarders: no trusted forwarder"),
    (["--http-trusted-forwarders", "10.0.0.0/8"], "only read with --http-forwarded"),
    (["--http-forwarded", "nginx", "--http-trusted-forwarders", "10.0.0.1/8"],
     "'10.0.0.1/8' is not a CIDR"),
    (["--http-forwarded", "nginx", "--http-trusted-forwarders", "unix",
      "--http-address", "off"], "needs the HTTP door"),
])
def test_the_cli_names_a_forwarded_mode_it_cannot_run(flags: list[str], message: str) -> None:
    # An HTTP door where the flags name none (tests/conftest.py turns it off).
    door = [] if "--http-address" in flags else ["--http-address", "127.0.0.1:0"]
    done = subprocess.run([binary("authz-service"), *door, *flags], capture_output=True,
                          timeout=30, check=False)
    assert done.returncode == 2
    assert message in done.stderr.decode()
