"""tollgate.http_server on a real socket: answers in request order whatever order they
finish in, a request too slow to arrive is refused, a failing handler never answers 200."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable

import pytest

from tollgate.http_server import HttpLimits, HttpRequest, HttpServer, simple_response

pytestmark = pytest.mark.integration  # it listens on a real port


async def exchange(port: int, data: bytes, until: int) -> bytes:
    """Send data, read until `until` responses' status lines have come (or EOF)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    received = b""
    try:
        while received.count(b"HTTP/1.1 ") < until:
            chunk = await asyncio.wait_for(reader.read(65536), 5)
            if not chunk:
                break
            received += chunk
    finally:
        writer.close()
    return received


def get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nhost: x\r\n\r\n".encode()


def test_pipelined_answers_keep_request_order_when_they_finish_out_of_order() -> None:
    async def main() -> None:
        gates: dict[str, asyncio.Event] = {p: asyncio.Event() for p in ("/a", "/b", "/c")}

        async def slow(path: str) -> bytes:
            await gates[path].wait()
            return simple_response(200, path.encode())

        def handler(request: HttpRequest) -> bytes | Awaitable[bytes]:
            if request.target == "/now":
                return simple_response(200, b"/now")
            return slow(request.target)

        server = HttpServer("127.0.0.1:0", handler)
        port = int((await server.start()).rpartition(":")[2])
        try:
            answer = asyncio.create_task(
                exchange(port, get("/a") + get("/now") + get("/b") + get("/c"), 4))
            await asyncio.sleep(0.05)
            for path in ("/c", "/b", "/a"):  # finish in reverse
                gates[path].set()
                await asyncio.sleep(0.01)
            body = await answer
            assert re.findall(rb"\r\n\r\n(/[a-z]+)", body) == [b"/a", b"/now", b"/b", b"/c"]
        finally:
            await server.stop(0)

    asyncio.run(main())


def test_a_request_too_slow_to_arrive_is_refused_with_408() -> None:
    async def main() -> None:
        server = HttpServer("127.0.0.1:0", lambda r: simple_response(200),
                            HttpLimits(request_seconds=0.3))
        port = int((await server.start()).rpartition(":")[2])
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /a HTTP/1.1\r\nhost: x\r\n")  # and never the blank line
            head = await asyncio.wait_for(reader.read(4096), 5)
            assert head.startswith(b"HTTP/1.1 408 ")
            assert b"connection: close" in head
            assert await asyncio.wait_for(reader.read(4096), 5) == b""  # closed
            writer.close()
        finally:
            await server.stop(0)

    asyncio.run(main())


def test_a_handler_that_fails_answers_500_never_200() -> None:
    async def main() -> None:
        async def broken_later() -> bytes:
            await asyncio.sleep(0)
            raise RuntimeError("boom")

        def handler(request: HttpRequest) -> bytes | Awaitable[bytes]:
            if request.target == "/now":
                raise RuntimeError("boom")
            return broken_later()

        server = HttpServer("127.0.0.1:0", handler)
        port = int((await server.start()).rpartition(":")[2])
        try:
            body = await exchange(port, get("/now") + get("/later"), 2)
            assert body.count(b"HTTP/1.1 500 ") == 2
        finally:
            await server.stop(0)

    asyncio.run(main())


def test_reading_pauses_while_too_many_answers_are_pending() -> None:
    async def main() -> None:
        release = asyncio.Event()
        started: list[str] = []

        async def held(path: str) -> bytes:
            started.append(path)
            await release.wait()
            return simple_response(200, path.encode())

        server = HttpServer("127.0.0.1:0", lambda r: held(r.target), HttpLimits(max_queued=4))
        port = int((await server.start()).rpartition(":")[2])
        try:
            requests = b"".join(get(f"/{i}") for i in range(20))
            answer = asyncio.create_task(exchange(port, requests, 20))
            for _ in range(100):
                await asyncio.sleep(0.01)
            assert len(started) == 4  # none more handled while four answers are pending
            release.set()
            body = await answer
            assert body.count(b"HTTP/1.1 200 ") == 20
        finally:
            await server.stop(0)

    asyncio.run(main())


def test_nothing_after_a_request_that_closes_the_connection_is_served() -> None:
    async def main() -> None:
        seen: list[str] = []

        def handler(request: HttpRequest) -> bytes:
            seen.append(request.target)
            return simple_response(200, request.target.encode())

        server = HttpServer("127.0.0.1:0", handler)
        port = int((await server.start()).rpartition(":")[2])
        try:
            closing = b"GET /first HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
            body = await exchange(port, closing + get("/second"), 2)
            assert body.count(b"HTTP/1.1 ") == 1 and b"connection: close" in body
            assert seen == ["/first"]
        finally:
            await server.stop(0)

    asyncio.run(main())
