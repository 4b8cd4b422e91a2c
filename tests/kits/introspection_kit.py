"""A real RFC 7662 introspection endpoint on 127.0.0.1, for tests: answers per token,
records what each request carried (client authentication, form), can hold its
answers (a slow or hung server), fail (5xx) or answer garbage; and the service's
pipeline on a policy that asks it."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from authz_service.keys.registry import KeyRegistry
from authz_service.pipeline import Pipeline
from authz_service.policy.loading import load_policy
from tollgate.reload import ConfigHolder

PATH = "/introspect"


@dataclass(frozen=True)
class Seen:
    """One request the endpoint received."""

    headers: dict[str, str]
    form: dict[str, str]

    @property
    def token(self) -> str:
        return self.form.get("token", "")


@dataclass
class Endpoint:
    base_url: str
    answers: dict[str, dict[str, Any]] = field(default_factory=dict)  # token -> JSON answer
    seen: list[Seen] = field(default_factory=list)
    status: int = 200
    raw: bytes | None = None  # answer these bytes instead of JSON (garbage)
    delay: float = 0.0  # seconds before answering (cut short by `release`)
    release: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    arrived: threading.Condition = field(default_factory=threading.Condition)

    @property
    def url(self) -> str:
        return self.base_url + PATH

    def active(self, token: str, **claims: Any) -> None:
        """`token` is active: sub, scope, exp (an hour from now) unless given."""
        answer: dict[str, Any] = {"active": True, "sub": "alice", "scope": "orders:read",
                                  "exp": int(time.time()) + 3600}
        answer.update(claims)
        with self.lock:
            self.answers[token] = answer

    def calls_for(self, token: str) -> int:
        with self.lock:
            return sum(1 for s in self.seen if s.token == token)

    def calls(self) -> int:
        with self.lock:
            return len(self.seen)

    def last(self) -> Seen:
        with self.lock:
            return self.seen[-1]

    def wait_for_calls(self, count: int, timeout: float = 10) -> None:
        with self.arrived:
            if not self.arrived.wait_for(lambda: self.calls() >= count, timeout):
                raise AssertionError(f"{count} introspection calls expected, {self.calls()} seen")


@contextmanager
def introspection_endpoint() -> Iterator[Endpoint]:
    endpoint = Endpoint("")

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as an authorization server would
        disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms stall

        def do_POST(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
            seen = Seen({k.lower(): v for k, v in self.headers.items()}, form)
            with endpoint.lock:
                endpoint.seen.append(seen)
                answer = endpoint.answers.get(seen.token, {"active": False})
                status, raw, delay = endpoint.status, endpoint.raw, endpoint.delay
            with endpoint.arrived:
                endpoint.arrived.notify_all()
            if self.path != PATH:
                status, raw = 404, b""
            if delay:
                endpoint.release.wait(delay)
            body = raw if raw is not None else json.dumps(answer).encode()
            try:
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except OSError:
                pass  # the service gave up waiting: what a slow-endpoint test wants

        def log_message(self, format: str, *args: Any) -> None:
            pass

    class Server(ThreadingHTTPServer):
        def handle_error(self, request: Any, client_address: Any) -> None:
            pass  # a client that gave up breaks the pipe of a slow answer

    server = Server(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    endpoint.base_url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield endpoint
    finally:
        endpoint.release.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


def service_pipeline(workdir: Path, text: str) -> tuple[KeyRegistry, Pipeline]:
    """The service's pipeline on `text` (written to workdir/authz.yaml) as the service
    loads it, and its key registry, which holds the HTTP client: close it at the end."""
    path = workdir / "authz.yaml"
    path.write_text(text)
    keys = KeyRegistry()
    return keys, Pipeline(ConfigHolder(load_policy(path, keys)), keys)
