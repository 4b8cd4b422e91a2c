"""A plain HTTP/1.1 server for checks: uvloop's transports, httptools' C parser.

Built for one caller that matters, Envoy (and NGINX or Traefik): keep-alive
connections carrying many small requests, sometimes pipelined. The handler gets
each parsed request and returns the whole response as bytes, or an awaitable of
them; answers go out in request order whatever order they finish in.

Bounded everywhere a peer could make it grow: header count and bytes, body bytes,
requests queued per connection (reading pauses past it), the time a request may
take to arrive. Malformed or oversized requests are answered 400/413/431 and the
connection closed, so a peer never gets an allow out of a broken request.

Drain (SIGTERM): every answer from then on carries `connection: close` and its
connection closes after it; idle connections are closed at once. The listener stays
open until connections have been quiet for a moment or the grace period ends, so a
check that met a closing idle connection (HTTP/1.1 has no GOAWAY: the peer sees a
reset before we read a byte, nothing was decided) is retried on a new connection
and answered; Envoy's `retry_policy: {retry_on: reset}` does exactly that. A request
that was read is answered, never cut off.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus

import httptools

from tollgate.tls import ServerTls

log = logging.getLogger("tollgate.http")

QUIET_SECONDS = 0.25  # a drain stops listening once no connection came for this long


@dataclass(frozen=True, slots=True)
class HttpLimits:
    max_header_count: int = 100  # Envoy's own default for requests
    max_header_bytes: int = 64 * 1024  # request line + headers
    max_body_bytes: int = 1024 * 1024
    max_queued: int = 64  # pipelined requests awaiting their answers
    request_seconds: float = 30.0  # from the first byte of a request to its end


@dataclass(slots=True)
class HttpRequest:
    method: str
    target: str  # as sent: path and query
    headers: list[tuple[str, str]]  # names lower-cased, in order
    body: bytes
    peer: str  # the peer's address ("" on a Unix socket)
    keep_alive: bool


Response = bytes | Awaitable[bytes]
Handler = Callable[[HttpRequest], Response]


def simple_response(status: int, body: bytes = b"", content_type: str = "text/plain",
                    *, head: bool = False) -> bytes:
    """A small response with a body (errors, health)."""
    lines = [
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}",
        f"content-type: {content_type}",
        "cache-control: no-store",
        f"content-length: {len(body)}",
    ]
    head_bytes = ("\r\n".join(lines) + "\r\n\r\n").encode()
    return head_bytes if head else head_bytes + body


def with_connection_close(response: bytes) -> bytes:
    line_end = response.find(b"\r\n")
    return response[: line_end + 2] + b"connection: close\r\n" + response[line_end + 2 :]


class _Refused(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status


class _Connection(asyncio.Protocol):
    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self.handler = server.handler
        self.limits = server.limits
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.peer = ""
        self.queue: deque[asyncio.Future[bytes] | bytes] = deque()
        # Parsed but not yet handled: a chunk can hold many pipelined requests, and only
        # `max_queued` are handled at a time (the rest wait here, reading is paused).
        self.waiting: deque[HttpRequest] = deque()
        self.closing = False  # answer what is queued, then close
        self.paused = False
        self._url = b""
        self._headers: list[tuple[str, str]] = []
        self._header_bytes = 0
        self._body: list[bytes] = []
        self._body_bytes = 0
        self._in_request = False  # between the first byte of a request and its end
        self._began = 0.0  # when the request in progress began (loop time)
        self._loop = asyncio.get_running_loop()

    # --- transport callbacks ----------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.peer = peer[0] if isinstance(peer, tuple) else ""
        self.server.accepted(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.forget(self)
        for pending in self.queue:
            if isinstance(pending, asyncio.Future):
                pending.cancel()
        self.queue.clear()
        self.waiting.clear()
        self.transport = None

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return  # after an error or in a drain nothing more is read
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._refuse(400, "protocol upgrades are not served")
        except httptools.HttpParserError as exc:
            # httptools wraps what a callback raises: a refused request is ours.
            cause = exc.__context__
            if isinstance(cause, _Refused):
                self._refuse(cause.status, str(cause))
            else:
                self._refuse(400, f"malformed request ({exc.__class__.__name__})")

    # --- parser callbacks -------------------------------------------------------

    def on_message_begin(self) -> None:
        self._in_request = True
        self._began = self._loop.time()  # the server's sweep refuses a request too slow
        self._url = b""
        self._headers = []
        self._header_bytes = 0
        self._body = []
        self._body_bytes = 0

    def on_url(self, url: bytes) -> None:
        self._header_bytes += len(url)
        if self._header_bytes > self.limits.max_header_bytes:
            raise _Refused(414, "request target too long")
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_bytes += len(name) + len(value) + 4
        if self._header_bytes > self.limits.max_header_bytes:
            raise _Refused(431, "request headers too large")
        if len(self._headers) >= self.limits.max_header_count:
            raise _Refused(431, "too many request headers")
        self._headers.append((name.decode("latin-1").lower(), value.decode("utf-8", "replace")))

    def on_headers_complete(self) -> None:
        if self.parser.should_upgrade():
            raise _Refused(400, "protocol upgrades are not served")
        for name, value in self._headers:
            # Refused at once, not after reading a megabyte of a body that is too large.
            if name == "content-length" and value.isdigit() \
                    and int(value) > self.limits.max_body_bytes:
                raise _Refused(413, "request body too large")

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        if self._body_bytes > self.limits.max_body_bytes:
            raise _Refused(413, "request body too large")
        self._body.append(body)

    def on_message_complete(self) -> None:
        self._in_request = False
        if self.closing:
            return  # after a request that closes the connection nothing more is served
        parser = self.parser
        request = HttpRequest(
            method=parser.get_method().decode("latin-1"),
            target=self._url.decode("latin-1"),
            headers=self._headers,
            body=b"".join(self._body) if self._body else b"",
            peer=self.peer,
            keep_alive=parser.should_keep_alive(),
        )
        if not request.keep_alive:
            self.closing = True
        if self.waiting or len(self.queue) >= self.limits.max_queued:
            self.waiting.append(request)
            if not self.paused and self.transport is not None:
                self.paused = True
                self.transport.pause_reading()
            return
        self._handle(request)

    def _handle(self, request: HttpRequest) -> None:
        try:
            response = self.handler(request)
        except Exception:
            log.exception("request handler failed")
            response = simple_response(500, b"internal error")
        if isinstance(response, bytes):
            if not self.queue:
                self._send(response, more=bool(self.waiting))
                return
            self.queue.append(response)
        else:
            self.queue.append(self._waiting(response))

    # --- answering ---------------------------------------------------------------

    def _waiting(self, response: Awaitable[bytes]) -> asyncio.Future[bytes]:
        future = asyncio.ensure_future(response)
        future.add_done_callback(self._flush)
        return future

    def _flush(self, _: object = None) -> None:
        queue = self.queue
        while queue:
            head = queue[0]
            if isinstance(head, asyncio.Future):
                if not head.done():
                    return
                if head.cancelled():
                    return  # the connection is going away
                exc = head.exception()
                if exc is not None:
                    log.error("request handler failed", exc_info=exc)
                    body = simple_response(500, b"internal error")
                else:
                    body = head.result()
            else:
                body = head
            queue.popleft()
            self._send(body, more=bool(queue) or bool(self.waiting))
            if self.transport is None:
                return
            while self.waiting and len(queue) < self.limits.max_queued:
                self._handle(self.waiting.popleft())
        if self.paused and not self.waiting and self.transport is not None \
                and not self.closing:
            self.paused = False
            self.transport.resume_reading()

    def _send(self, response: bytes, *, more: bool = False) -> None:
        transport = self.transport
        if transport is None:
            return
        last = (self.closing or self.server.draining) and not more and not self.queue \
            and not self.waiting
        if last:
            transport.write(with_connection_close(response))
            transport.close()
            return
        transport.write(response)

    def _refuse(self, status: int, detail: str) -> None:
        """Answer a request we will not parse further, then close (after what is queued)."""
        self.closing = True
        self._in_request = False
        self.queue.append(simple_response(status, detail.encode()))
        self._flush()

    def too_slow(self, now: float, limit: float) -> bool:
        """Refuse (408) a request that began more than `limit` seconds ago."""
        if self._in_request and not self.closing and now - self._began > limit:
            self._refuse(408, "request not received in time")
            return True
        return False

    def drain(self) -> None:
        """Answer what is in flight with `connection: close`; close now if idle."""
        if not self.queue and self.transport is not None and not self._in_request:
            self.transport.close()


@dataclass
class HttpServer:
    """One listener (HOST:PORT or unix:PATH) serving `handler`."""

    address: str
    handler: Handler
    limits: HttpLimits = field(default_factory=HttpLimits)
    tls: ServerTls | None = None  # serve TLS (mTLS with a client CA), reloaded on change
    connections: set[_Connection] = field(default_factory=set)
    draining: bool = False
    bound: str = ""
    _server: asyncio.AbstractServer | None = None
    _idle: asyncio.Event = field(default_factory=asyncio.Event)  # the last connection left
    _busy: asyncio.Event = field(default_factory=asyncio.Event)  # a connection arrived
    _sweeper: asyncio.TimerHandle | None = None

    def accepted(self, connection: _Connection) -> None:
        self.connections.add(connection)
        self._busy.set()

    def forget(self, connection: _Connection) -> None:
        self.connections.discard(connection)
        if not self.connections:
            self._idle.set()

    def _sweep(self) -> None:
        """One timer for every connection (a timer per request costs more than the
        request): a request still arriving after `request_seconds` is refused."""
        loop = asyncio.get_running_loop()
        limit = self.limits.request_seconds
        now = loop.time()
        for connection in list(self.connections):
            connection.too_slow(now, limit)
        self._sweeper = loop.call_later(max(limit / 4, 0.05), self._sweep)

    async def start(self) -> str:
        loop = asyncio.get_running_loop()
        if self.limits.request_seconds > 0:
            self._sweeper = loop.call_later(max(self.limits.request_seconds / 4, 0.05),
                                            self._sweep)
        address = self.address.strip()
        tls = self.tls.http_context() if self.tls is not None else None
        if address.startswith("unix:"):
            path = address[len("unix:"):]
            path = "/" + path.lstrip("/") if path.startswith("//") else path
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)  # a stale socket from a killed process
            self._server = await loop.create_unix_server(lambda: _Connection(self), path,
                                                         ssl=tls)
            self.bound = f"unix:{path}"
        else:
            host, _, port = address.rpartition(":")
            host = host.strip("[]")
            server = await loop.create_server(
                lambda: _Connection(self), host, int(port), reuse_address=True, backlog=1024,
                ssl=tls,
            )
            for sock in server.sockets:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._server = server
            bound_port = server.sockets[0].getsockname()[1]
            self.bound = f"{host}:{bound_port}"
        return self.bound

    async def stop(self, grace: float) -> None:
        """Answer with `connection: close` from now on; once connections have been quiet
        for QUIET_SECONDS (or `grace` ends), stop listening and close what is left."""
        self.draining = True
        for connection in list(self.connections):
            connection.drain()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(grace, 0.0)
        while loop.time() < deadline:
            self._idle.clear()
            if self.connections:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._idle.wait(), deadline - loop.time())
                continue
            # No connection: stop once none arrives for a moment (a retry may be coming).
            try:
                await asyncio.wait_for(self._busy.wait(), min(QUIET_SECONDS,
                                                              deadline - loop.time()))
            except TimeoutError:
                break
            self._busy.clear()
        if self._server is not None:
            self._server.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
        for connection in list(self.connections):
            if connection.transport is not None:
                connection.transport.abort()
        if self.bound.startswith("unix:"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.bound[len("unix:"):])
