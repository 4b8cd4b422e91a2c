"""Both of authz-service's doors from the outside: one neutral request, asked through
gRPC (a CheckRequest as Envoy builds it) and through the plain-HTTP door (the request
Envoy's http_service sends), and each answer read the way Envoy applies it."""

from __future__ import annotations

import json
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httptools

from tests.kits.grpc_kit import AuthzClient, check_request

PREFIX = "/check"


@dataclass(frozen=True)
class Ask:
    """A client's request as Envoy saw it, and what only Envoy knows about it."""

    method: str = "GET"
    path: str = "/orders/1"
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes | None = None
    principal: str = ""  # the verified peer's URI SAN (mTLS)
    source_address: str = "10.0.0.1"
    route: str = ""  # the Envoy route's tollgate route name (context extension / metadata)
    scopes: str = ""
    request_id: str = "rid-1"


@dataclass(frozen=True)
class Reply:
    """An answer in the terms Envoy applies it, whatever the door."""

    status: int
    headers: dict[str, str]  # denial: to the client; allow: to the upstream
    body: dict[str, Any] | None
    removed: tuple[str, ...] = ()
    metadata: dict[str, str] = field(default_factory=dict)
    client_headers: dict[str, str] = field(default_factory=dict)  # allow: to the client

    @property
    def code(self) -> str:
        if self.body is None:
            return "ok"
        return str(self.body.get("error") or self.body.get("code"))


def ask_grpc(client: AuthzClient, ask: Ask) -> Reply:
    extensions = {k: v for k, v in (("tollgate_route", ask.route),
                                    ("tollgate_scopes", ask.scopes)) if v}
    request = check_request(
        ask.method, ask.path, {**ask.headers, "x-request-id": ask.request_id},
        principal=ask.principal, context_extensions=extensions or None, body=ask.body,
        raw_body=False,
    )
    request.attributes.source.address.socket_address.address = ask.source_address
    if ask.principal:
        request.attributes.source.certificate = "-----BEGIN CERTIFICATE-----"
    answer = client.check(request).raw
    if answer.status.code == 0:
        ok = answer.ok_response
        return Reply(
            200,
            {o.header.key: o.header.value for o in ok.headers},
            None,
            tuple(ok.headers_to_remove),
            {k: str(v) for k, v in answer.dynamic_metadata.items()},
            {o.header.key: o.header.value for o in ok.response_headers_to_add},
        )
    denied = answer.denied_response
    return Reply(int(denied.status.code), {o.header.key: o.header.value for o in denied.headers},
                 json.loads(denied.body))


METADATA_HEADERS = ("subject", "identity", "issuer", "tenant", "plan", "scopes", "route")


def http_request_bytes(ask: Ask, *, host: str = "api.test") -> bytes:
    """What Envoy's http_service sends for `ask` (attribute headers included)."""
    lines = [f"{ask.method} {PREFIX}{ask.path} HTTP/1.1", f"host: {host}"]
    body = ask.body or b""
    lines.append(f"content-length: {len(body)}")
    lines += [f"{k.lower()}: {v}" for k, v in ask.headers.items()]
    lines.append(f"x-request-id: {ask.request_id}")
    attrs = {"source-address": ask.source_address, "peer-principal": ask.principal,
             "route": ask.route, "scopes": ask.scopes}
    if ask.principal:
        attrs["peer-cert-sha256"] = "ab" * 32
    lines += [f"x-tollgate-attr-{k}: {v}" for k, v in attrs.items() if v]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@dataclass
class RawResponse:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k == name), None)


class _ResponseCollector:
    def __init__(self) -> None:
        self.done: list[RawResponse] = []
        self.parser: httptools.HttpResponseParser | None = None
        self._status = 0
        self._headers: list[tuple[str, str]] = []
        self._body = b""

    def on_headers_complete(self) -> None:
        self._status = self.parser.get_status_code() if self.parser is not None else 0

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.decode().lower(), value.decode()))

    def on_body(self, body: bytes) -> None:
        self._body += body

    def on_message_complete(self) -> None:
        self.done.append(RawResponse(self._status, self._headers, self._body))
        self._headers, self._body = [], b""


class HttpDoorClient:
    """A keep-alive connection to the HTTP door (a Unix socket or a TCP port)."""

    def __init__(self, address: str, timeout: float = 10) -> None:
        if address.startswith("unix:"):
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(timeout)
            try:
                self.sock.connect(address[len("unix:"):])
            except OSError:
                self.sock.close()
                raise
        else:
            host, _, port = address.rpartition(":")
            self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        self.collector = _ResponseCollector()
        self.parser = httptools.HttpResponseParser(self.collector)
        self.collector.parser = self.parser
        self.closed = False

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def receive(self, count: int = 1) -> list[RawResponse]:
        """The next `count` responses, in order (statuses filled in)."""
        out: list[RawResponse] = []
        while len(out) < count:
            if self.collector.done:
                response = self.collector.done.pop(0)
                out.append(response)
                continue
            data = self.sock.recv(65536)
            if not data:
                self.closed = True
                break
            self.parser.feed_data(data)
        return out

    def exchange(self, data: bytes) -> RawResponse:
        self.send(data)
        (response,) = self.receive(1)
        return response

    def peer_closed(self) -> bool:
        """True once the door has closed its side (reads return end of stream)."""
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:  # closed with our unread bytes in its buffer
            return True
        except TimeoutError:
            return False

    def close(self) -> None:
        self.sock.close()


def ask_http(client: HttpDoorClient, ask: Ask) -> Reply:
    raw = client.exchange(http_request_bytes(ask))
    headers = dict(raw.headers)
    if raw.status == 200:
        removed = tuple(h.strip() for h in headers.get("x-envoy-auth-headers-to-remove", "")
                        .split(",") if h.strip())
        return Reply(
            200,
            {k: v for k, v in headers.items() if k.startswith("x-tollgate-")
             or k == "x-user-email"},
            None,
            removed,
            {k: v for k, v in headers.items() if k in METADATA_HEADERS},
            {k: v for k, v in headers.items() if k.startswith(("x-ratelimit-", "ratelimit"))},
        )
    client_view = {k: v for k, v in headers.items() if k not in ("content-length",)}
    return Reply(raw.status, client_view, json.loads(raw.body) if raw.body else None)


def door_socket(workdir: Path) -> str:
    return f"unix:{workdir / 'authz-http.sock'}"
