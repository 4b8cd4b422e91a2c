"""The HTTP floor: a trivial ext_authz http_service server on uvloop + httptools.

It allows every request that carries a Bearer token, with one upstream header, and
does nothing else: no policy, no keys, no limits. Tollgate's HTTP door is measured
against it (bench/envoy_bench.py), as bench/empty_authz.py is the gRPC floor.

    .venv/bin/python -m bench.empty_http_authz unix:/path.sock | HOST:PORT
"""

from __future__ import annotations

import asyncio
import os
import sys

import httptools
import uvloop

ALLOW = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nx-tollgate-subject: anyone\r\n\r\n"
DENY = b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\n\r\n"


class Floor(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self.parser = httptools.HttpRequestParser(self)
        self.bearer = False

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"authorization" and value[:7].lower() == b"bearer ":
            self.bearer = True

    def on_message_complete(self) -> None:
        self.transport.write(ALLOW if self.bearer else DENY)
        self.bearer = False


async def serve(address: str) -> None:
    loop = asyncio.get_running_loop()
    if address.startswith("unix:"):
        path = address[len("unix:"):]
        server = await loop.create_unix_server(Floor, path)
    else:
        host, _, port = address.rpartition(":")
        server = await loop.create_server(Floor, host, int(port))
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    if sys.argv[1].startswith("unix:") and os.path.exists(sys.argv[1][len("unix:"):]):
        os.unlink(sys.argv[1][len("unix:"):])
    uvloop.run(serve(sys.argv[1]))
