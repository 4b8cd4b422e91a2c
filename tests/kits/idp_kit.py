"""A JWKS IdP on a fixed loopback port that tests stop and start, and a policy that
fetches from it."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.kits import jwt_kit
from tests.kits.processes import free_port

KEY = jwt_kit.rsa_key("ops-1")
SERVICE = "envoy.service.auth.v3.Authorization"


class Idp:
    """A JWKS endpoint on a fixed port that can be killed and brought back."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/jwks"
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        document = json.dumps(jwt_kit.jwks(KEY)).encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(document)))
                self.end_headers()
                self.wfile.write(document)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,),
                                        daemon=True)
        self._thread.start()

    def __enter__(self) -> Idp:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None


def policy(jwks_url: str, route: str = "orders") -> str:
    refresh = {"timeout_seconds": 0.5, "unknown_kid_wait_seconds": 0.5, "retry_seconds": 0.1,
               "min_ttl_seconds": 0.1, "default_ttl_seconds": 0.5}
    return f"""realm: t
identities:
  - name: corp
    jwt:
      issuer: {jwt_kit.ISSUER}
      audiences: [{jwt_kit.AUDIENCE}]
      jwks_uri: {jwks_url}
      refresh: {json.dumps(refresh)}
routes:
  - name: {route}
    match: {{path: {{prefix: /orders}}}}
    identities: [corp]
    require: {{scopes: {{all_of: ["orders:read"]}}}}
"""
