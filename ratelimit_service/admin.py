"""The admin API: read and reset a descriptor's counters over HTTP JSON.

Served on its own address (`--admin-address`, off by default; a bare `PORT` or
`:PORT` binds 127.0.0.1), never on the gRPC port Envoy talks to. Requests from a
peer that is not loopback are refused with 403 unless `--admin-allow-remote`:
anyone who can reach it can reset limits. One request per connection, bounded
(16 KiB of headers, 64 KiB of body, 5 s to send them).

    POST /v1/usage  {"domain": "shop", "entries": [["plan", "gold"], ["subject", "alice"]]}
    POST /v1/reset  (same body)

`tollgate limits show|reset` is the command-line client.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from ratelimit_service import inspection
from ratelimit_service.decision import RequestError
from ratelimit_service.limiter import RateLimiter
from ratelimit_service.stores import StoreUnavailable

log = logging.getLogger("ratelimit_service.admin")

MAX_HEAD = 16 * 1024
MAX_BODY = 64 * 1024
READ_SECONDS = 5.0
_REASONS = {200: "OK", 400: "Bad Request", 403: "Forbidden", 404: "Not Found",
            405: "Method Not Allowed", 413: "Payload Too Large", 503: "Service Unavailable"}


def admin_address(text: str) -> tuple[str, int]:
    """`HOST:PORT`, `[V6]:PORT`, `:PORT` or `PORT`; no host means loopback."""
    host, sep, port = text.strip().rpartition(":")
    if not sep:
        host, port = "", text.strip()
    if not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"admin address '{text}' is not HOST:PORT")
    return (host.strip("[]") or "127.0.0.1"), int(port)


class HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


Handler = Callable[[RateLimiter, str, list[tuple[str, str]]], Awaitable[dict[str, Any]]]
ROUTES: dict[str, Handler] = {"/v1/usage": inspection.usage, "/v1/reset": inspection.reset}


class AdminServer:
    """The admin HTTP listener (start/stop like the other doors)."""

    def __init__(
        self, address: str, limiter: RateLimiter, *, allow_remote: bool = False,
        reuse_port: bool = False,
    ) -> None:
        self.host, self.port = admin_address(address)
        self.limiter = limiter
        self.allow_remote = allow_remote
        self.reuse_port = reuse_port
        self.server: asyncio.Server | None = None

    async def start(self) -> str:
        self.server = await asyncio.start_server(
            self._serve, self.host, self.port, limit=MAX_HEAD, reuse_port=self.reuse_port or None,
        )
        host, port = self.server.sockets[0].getsockname()[:2]
        log.info("admin API served", extra={"address": f"{host}:{port}",
                                             "allow_remote": self.allow_remote})
        return f"{host}:{port}"

    async def stop(self, grace: float = 0.0) -> None:
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.server.wait_closed(), max(grace, 0.1))

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            status, body = await self._answer(reader, writer)
        except HttpError as exc:
            status, body = exc.status, {"error": str(exc)}
        except Exception:
            log.exception("admin request failed")
            status, body = 503, {"error": "internal error"}
        payload = json.dumps(body).encode()
        head = (f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
                f"content-type: application/json\r\ncontent-length: {len(payload)}\r\n"
                "connection: close\r\n\r\n")
        with contextlib.suppress(ConnectionError):
            writer.write(head.encode() + payload)
            await writer.drain()
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()

    async def _answer(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> tuple[int, dict[str, Any]]:
        method, path, body = await _read_request(reader)  # bounded, then answered
        peer = writer.get_extra_info("peername")
        if not self.allow_remote and not _loopback(peer):
            address = peer[0] if peer else "unknown"
            log.warning("admin API refused a remote peer", extra={"peer": address})
            raise HttpError(403, f"admin API refused: peer {address} is not loopback "
                                 "(ratelimit-service --admin-allow-remote to allow it)")
        handler = ROUTES.get(path)
        if handler is None:
            raise HttpError(404, f"no such endpoint {path} (known: {', '.join(ROUTES)})")
        if method != "POST":
            raise HttpError(405, f"{path} takes POST")
        domain, entries = _descriptor(body)
        try:
            return 200, await handler(self.limiter, domain, entries)
        except RequestError as exc:
            raise HttpError(400, str(exc)) from None
        except (StoreUnavailable, RuntimeError) as exc:
            raise HttpError(503, f"counter store: {exc}") from None


def _loopback(peer: Any) -> bool:
    if not peer:
        return False
    try:
        address = ipaddress.ip_address(peer[0])
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return bool((mapped or address).is_loopback)


async def _read_request(reader: asyncio.StreamReader) -> tuple[str, str, Any]:
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_SECONDS)
    except (asyncio.LimitOverrunError, ValueError):
        raise HttpError(413, f"request head over {MAX_HEAD} bytes") from None
    except (asyncio.IncompleteReadError, TimeoutError):
        raise HttpError(400, "incomplete request") from None
    request_line, *header_lines = head.decode("latin-1").split("\r\n")
    parts = request_line.split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise HttpError(400, "not an HTTP/1.x request")
    headers = {}
    for line in header_lines:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    length_text = headers.get("content-length", "0")
    if not length_text.isdigit():
        raise HttpError(400, "content-length is not a number")
    if int(length_text) > MAX_BODY:
        raise HttpError(413, f"body over {MAX_BODY} bytes")
    try:
        raw = await asyncio.wait_for(reader.readexactly(int(length_text)), READ_SECONDS)
    except (asyncio.IncompleteReadError, TimeoutError):
        raise HttpError(400, "incomplete body") from None
    try:
        body = json.loads(raw or b"{}")
    except ValueError as exc:
        raise HttpError(400, f"body is not JSON: {exc}") from None
    return parts[0], parts[1].split("?", 1)[0], body


def _descriptor(body: Any) -> tuple[str, list[tuple[str, str]]]:
    if not isinstance(body, dict):
        raise HttpError(400, 'body must be {"domain": ..., "entries": [[key, value], ...]}')
    domain, entries = body.get("domain"), body.get("entries")
    if not isinstance(domain, str) or not domain:
        raise HttpError(400, "domain must be a non-empty string")
    if (not isinstance(entries, list) or not entries or not all(
            isinstance(e, list) and len(e) == 2 and all(isinstance(x, str) for x in e)
            for e in entries)):
        raise HttpError(400, "entries must be a non-empty list of [key, value] strings")
    return domain, [(k, v) for k, v in entries]
