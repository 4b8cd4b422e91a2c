"""A real local HTTP server for JWKS / discovery documents, counting its hits."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Route:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds before answering (slow IdP)
    byte_delay: float = 0.0  # seconds between body bytes (an IdP that trickles)


@dataclass
class HttpServer:
    base_url: str
    routes: dict[str, Route]
    hits: dict[str, int]
    release: threading.Event  # set to cut short any delayed answer
    lock: threading.Lock

    def set_json(self, path: str, document: Any, status: int = 200, **headers: str) -> None:
        with self.lock:
            self.routes[path] = Route(status, json.dumps(document).encode(), dict(headers))

    def set_route(self, path: str, route: Route) -> None:
        with self.lock:
            self.routes[path] = route

    def total_hits(self) -> int:
        with self.lock:
            return sum(self.hits.values())

    def hits_for(self, path: str) -> int:
        with self.lock:
            return self.hits.get(path, 0)


@contextmanager
def serve_http() -> Iterator[HttpServer]:
    routes: dict[str, Route] = {}
    hits: dict[str, int] = {}
    lock = threading.Lock()
    release = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            with lock:
                hits[path] = hits.get(path, 0) + 1
                route = routes.get(path)
            if route is None:
                self.send_response(404)
                self.send_header("content-length", "0")
                self.end_headers()
                return
            if route.delay:
                release.wait(route.delay)
            self.send_response(route.status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(route.body)))
            for name, value in route.headers.items():
                self.send_header(name.replace("_", "-"), value)
            self.end_headers()
            if not route.byte_delay:
                self.wfile.write(route.body)
                return
            try:
                for index in range(len(route.body)):
                    self.wfile.write(route.body[index : index + 1])
                    self.wfile.flush()
                    release.wait(route.byte_delay)
            except OSError:
                pass  # the client gave up: that is what the test wanted

        def log_message(self, format: str, *args: Any) -> None:
            pass

    class Server(ThreadingHTTPServer):
        def handle_error(self, request: Any, client_address: Any) -> None:
            # A client that gave up (a fetch deadline in the service) breaks the pipe
            # of a slow answer: expected here, not worth a traceback on stderr.
            pass

    server = Server(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield HttpServer(
            f"http://127.0.0.1:{server.server_address[1]}", routes, hits, release, lock
        )
    finally:
        release.set()
        server.shutdown()
        server.server_close()
        thread.join(5)
