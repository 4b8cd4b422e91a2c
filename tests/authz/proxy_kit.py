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
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.support import binary, free_port, stop_process, wait_for

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


def _listening(port: int) -> bool:
    import socket

    with socket.socket() as probe:
        probe.settimeout(0.2)
        return probe.connect_ex(("127.0.0.1", port)) == 0


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
        wait_for(lambda: proc.poll() is not None or _listening(port), timeout=15,
                 what="nginx listening")
        if proc.poll() is not None:
            raise AssertionError(f"nginx exited: {log_path.read_text()}")
        yield port
    finally:
        stop_process(proc)
