"""The lean RESP connection: encoding, pipelining, timeouts and reconnects."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import hiredis
import pytest

from ratelimit_service.stores import StoreUnavailable
from ratelimit_service.stores.resp import RespConnection, _connected_to_itself, encode
from ratelimit_service.stores.target import parse_redis_url
from tests.kits.redis_procs import RedisProcess

pytestmark = pytest.mark.integration  # real processes: redis-server, Envoy, the service


def connect(url: str, timeout: float = 1.0) -> RespConnection:
    return RespConnection(parse_redis_url(url), timeout=timeout)


def test_encode_is_resp_arrays_of_bulk_strings() -> None:
    assert encode(("SET", "k", 5, b"\x00")) == (
        b"*4\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\n5\r\n$1\r\n\x00\r\n"
    )


def test_concurrent_calls_are_answered_in_order(redis_server: RedisProcess) -> None:
    async def main() -> None:
        conn = connect(redis_server.url)
        replies = await asyncio.gather(*(conn.call("INCRBY", "c", 1) for _ in range(200)))
        assert replies == list(range(1, 201))
        error = await conn.call("NOSUCHCOMMAND")
        assert isinstance(error, hiredis.ReplyError)
        assert await conn.call("GET", "c") == b"200"
        await conn.aclose()

    asyncio.run(main())


def test_a_silent_server_times_out_and_a_dead_one_is_unavailable() -> None:
    async def main() -> None:
        writers: list[asyncio.StreamWriter] = []

        async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writers.append(writer)
            await reader.read(1 << 16)  # and never answer

        server = await asyncio.start_server(swallow, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        conn = connect(f"redis://127.0.0.1:{port}", timeout=0.2)
        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match="no reply within"):
            await conn.call("PING")
        assert time.monotonic() - started < 2
        for writer in writers:
            writer.close()
        server.close()
        await server.wait_closed()
        with pytest.raises(StoreUnavailable, match="cannot connect"):
            await conn.call("PING")
        await conn.aclose()

    asyncio.run(main())


def test_a_loopback_self_connection_is_recognised() -> None:
    # A client reconnecting to a dead local Redis can land on the target port as
    # its own source port and connect to itself; that socket must count as
    # refused (and be closed), or Redis cannot bind its port when it comes back.
    async def main() -> None:
        loop = asyncio.get_running_loop()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.connect(sock.getsockname())  # simultaneous open with itself
        transport, _ = await loop.create_connection(asyncio.Protocol, sock=sock)
        assert _connected_to_itself(transport)
        transport.abort()
        server = await asyncio.start_server(lambda _r, w: w.close(), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        transport, _ = await loop.create_connection(asyncio.Protocol, "127.0.0.1", port)
        assert not _connected_to_itself(transport)
        transport.abort()
        server.close()
        await server.wait_closed()

    asyncio.run(main())


def test_reconnects_after_a_restart_with_auth_and_db(tmp_path: Path) -> None:
    server = RedisProcess(tmp_path, extra=["--requirepass", "s3cret"])
    server.start()
    try:
        async def main() -> None:
            conn = connect(f"redis://:s3cret@127.0.0.1:{server.port}/3")
            assert await conn.call("SET", "k", "v") == b"OK"
            server.stop()
            with pytest.raises(StoreUnavailable):
                await conn.call("GET", "k")
            server.start()
            assert await conn.call("SET", "k", "w") == b"OK"
            assert await conn.call("GET", "k") == b"w"
            wrong = connect(f"redis://:nope@127.0.0.1:{server.port}")
            with pytest.raises(StoreUnavailable, match=r"WRONGPASS|invalid"):
                await wrong.call("PING")
            await conn.aclose()

        asyncio.run(main())
    finally:
        server.stop()
