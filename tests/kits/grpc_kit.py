"""Real gRPC against a real authz-service process, with CheckRequests from xds-protos."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.kits.processes import binary, stop_process, wait_for


def check_request(
    method: str = "GET",
    path: str = "/orders/1",
    headers: Mapping[str, str] | None = None,
    *,
    host: str = "api.test",
    principal: str = "",
    context_extensions: Mapping[str, str] | None = None,
    raw_headers: list[tuple[str, str]] | None = None,
    body: bytes | None = None,
    raw_body: bool = True,
) -> external_auth_pb2.CheckRequest:
    request = external_auth_pb2.CheckRequest()
    http = request.attributes.request.http
    http.method = method
    http.path = path
    http.host = host
    http.scheme = "https"
    http.id = "req-1"
    if headers:
        http.headers.update({k.lower(): v for k, v in headers.items()})
    if raw_headers:
        http.header_map.headers.extend(
            base_pb2.HeaderValue(key=k, raw_value=v.encode()) for k, v in raw_headers
        )
    if body is not None:
        # Envoy's with_request_body: raw_body with pack_as_bytes, else the UTF-8 `body`.
        if raw_body:
            http.raw_body = body
        else:
            http.body = body.decode()
        http.size = len(body)
    if principal:
        request.attributes.source.principal = principal
    if context_extensions:
        request.attributes.context_extensions.update(context_extensions)
    return request


@dataclass(frozen=True)
class Answer:
    """A CheckResponse read the way Envoy would apply it."""

    raw: external_auth_pb2.CheckResponse

    @property
    def allowed(self) -> bool:
        return bool(self.raw.status.code == 0)

    @property
    def status(self) -> int:
        return 200 if self.allowed else int(self.raw.denied_response.status.code)

    def header(self, name: str) -> str | None:
        options = (
            self.raw.ok_response.headers if self.allowed else self.raw.denied_response.headers
        )
        for option in options:
            if option.header.key == name:
                return str(option.header.value)
        return None

    @property
    def body(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.raw.denied_response.body)
        return data

    @property
    def removed(self) -> list[str]:
        return list(self.raw.ok_response.headers_to_remove)

    @property
    def metadata(self) -> dict[str, Any]:
        return {k: v for k, v in self.raw.dynamic_metadata.items()}


class AuthzClient:
    def __init__(self, address: str) -> None:
        self.channel = grpc.insecure_channel(address)
        self.stub = external_auth_pb2_grpc.AuthorizationStub(self.channel)
        self.health = health_pb2_grpc.HealthStub(self.channel)

    def check(self, request: external_auth_pb2.CheckRequest, timeout: float = 10) -> Answer:
        return Answer(self.stub.Check(request, timeout=timeout))

    def serving(self, service: str = "") -> bool:
        """Health SERVING for `service` ("": ready; "liveness": the process answers)."""
        try:
            reply = self.health.Check(health_pb2.HealthCheckRequest(service=service), timeout=1)
        except grpc.RpcError:
            return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

    def live(self) -> bool:
        return self.serving("liveness")

    def close(self) -> None:
        self.channel.close()


@contextmanager
def authz_process(
    config: Path, workdir: Path, env: Mapping[str, str] | None = None
) -> Iterator[tuple[subprocess.Popen[bytes], AuthzClient]]:
    """Run `authz-service` on a unix socket; yield once it is live (not necessarily ready:
    a JWT source whose IdP is down keeps it NOT_SERVING on "")."""
    import os

    socket_path = workdir / "authz.sock"
    log_path = workdir / "authz.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [
                binary("authz-service"),
                "--config", str(config),
                "--grpc-address", f"unix:{socket_path}",
                # Both doors, so the suite can ask each (tests/authz/door_kit.py).
                "--http-address", f"unix:{workdir / 'authz-http.sock'}",
                "--reload-interval", "0.05",
                "--log-level", "debug",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )
    client = AuthzClient(f"unix:{socket_path}")
    try:
        wait_for(
            lambda: proc.poll() is not None or client.live(),
            timeout=20,
            what="authz-service liveness SERVING",
        )
        if proc.poll() is not None:
            raise AssertionError(f"authz-service exited: {log_path.read_text()}")
        yield proc, client
    finally:
        client.close()
        stop_process(proc)
