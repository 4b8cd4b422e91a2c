"""A lean pipelined Redis connection: the transport under every Redis store.

redis-py spends ~180 µs of CPU per command on this machine (pool checkout, timeout
contexts, per-argument encoding); the rate-limit hot path needs one command per
batch of requests, so this module speaks RESP directly: one connection, every call
written at once and answered in order (concurrent calls pipeline on the wire by
themselves), replies parsed by hiredis.

Failure model: every call carries a deadline (the moment its caller started plus the
store timeout: connecting, authenticating and waiting for the reply all count
against it). When the oldest unanswered call passes its deadline the connection is
dropped and every pending call fails with StoreUnavailable; the next call connects
again. Calls are never retried (a lost INCRBY reply must not count twice).
"""

from __future__ import annotations

import asyncio
import collections
import ssl
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

import hiredis

from ratelimit_service.stores import StoreUnavailable

Command = tuple[Any, ...]


def encode(args: Command) -> bytes:
    """One RESP command (an array of bulk strings), packed by hiredis when it can
    (str, bytes, int and float arguments: 3x faster than Python on a merged call)."""
    try:
        packed: bytes = hiredis.pack_command(args)
    except TypeError:
        pass
    else:
        return packed
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, bytes):
            data = arg
        elif isinstance(arg, str):
            data = arg.encode()
        else:
            data = str(arg).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where one Redis listens and how to log in (from stores.target.parse_redis_url)."""

    host: str = "127.0.0.1"
    port: int = 6379
    path: str = ""  # a Unix socket instead of host:port
    username: str | None = None
    password: str | None = None
    db: int = 0
    tls: bool = False
    tls_ca_file: str = ""  # verify the server against this CA (default: the system's)

    def describe(self) -> str:
        if self.path:
            return f"unix://{self.path}"
        return f"{'rediss' if self.tls else 'redis'}://{self.host}:{self.port}"


class _Protocol(asyncio.Protocol):
    def __init__(self, owner: RespConnection) -> None:
        self.owner = owner
        self.reader = hiredis.Reader()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.owner.current is not self:
            return  # a dropped connection's late bytes answer nobody
        self.reader.feed(data)
        pending = self.owner.pending
        while True:
            reply = self.reader.gets()
            if reply is False:
                return
            if not pending:  # an answer nobody asked for: the stream is out of step
                self.owner.drop(StoreUnavailable("redis: unexpected reply"))
                return
            future, _ = pending.popleft()
            if not future.done():
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.owner.current is self:  # not an old connection closing late
            self.owner.drop(StoreUnavailable(f"redis: connection lost ({exc or 'closed'})"))


class RespConnection:
    """One lazily (re)connected, pipelined connection to one Redis."""

    def __init__(self, endpoint: Endpoint, *, timeout: float = 1.0) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self.pending: collections.deque[tuple[asyncio.Future[Any], float]] = collections.deque()
        self.calls = 0  # commands sent
        self.writes = 0  # transport writes (each a syscall)
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Future[_Protocol] | None = None
        self._watchdog: asyncio.TimerHandle | None = None

    @property
    def current(self) -> _Protocol | None:
        return self._protocol

    def deadline(self) -> float:
        """The deadline of a call starting now."""
        return asyncio.get_running_loop().time() + self.timeout

    async def call(self, *args: Any, deadline: float | None = None) -> Any:
        """Send one command and wait for its reply (a hiredis.ReplyError is returned,
        not raised). Raises StoreUnavailable when Redis cannot be reached in time."""
        (reply,) = await self.call_many([args], deadline=deadline)
        return reply

    def send(self, args: Command, deadline: float) -> Awaitable[Any]:
        """`call` without a coroutine frame when connected: the reply's future itself."""
        protocol = self._protocol
        transport = protocol.transport if protocol is not None else None
        if transport is None or transport.is_closing():
            return self.call(*args, deadline=deadline)  # (re)connects first
        return self._enqueue(transport, encode(args), 1, deadline)[0]

    async def call_many(
        self, commands: list[Command], *, deadline: float | None = None
    ) -> list[Any]:
        """Send commands in one write, so no other call lands between them on the wire
        (ASKING must immediately precede its command); replies in order."""
        if deadline is None:
            deadline = self.deadline()
        protocol = self._protocol or await self._connect(deadline)
        transport = protocol.transport
        if transport is None or transport.is_closing():
            self.drop(StoreUnavailable("redis: connection closed"))
            protocol = await self._connect(deadline)
            transport = protocol.transport
            if transport is None:
                raise StoreUnavailable("redis: connection closed")
        data = b"".join(encode(args) for args in commands)
        futures = self._enqueue(transport, data, len(commands), deadline)
        if len(futures) == 1:
            return [await futures[0]]
        return list(await asyncio.gather(*futures))

    def _enqueue(
        self, transport: asyncio.Transport, data: bytes, replies: int, deadline: float
    ) -> list[asyncio.Future[Any]]:
        """Write `data` and queue one future per reply it will get, in order."""
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[Any]] = [loop.create_future() for _ in range(replies)]
        self.pending.extend((future, deadline) for future in futures)
        self.calls += replies
        self.writes += 1
        transport.write(data)
        if self._watchdog is None:
            self._arm(loop, deadline)
        return futures

    def _arm(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        self._watchdog = loop.call_at(when, self._check)

    def _check(self) -> None:
        """At the oldest call's deadline: fail everything if it is still unanswered."""
        self._watchdog = None
        # (A cancelled caller's entry stays: its reply still comes, in order.)
        if not self.pending:
            return
        loop = asyncio.get_running_loop()
        deadline = self.pending[0][1]
        if deadline <= loop.time():
            self.drop(StoreUnavailable(f"redis: no reply within {self.timeout:g} s"))
            return
        self._arm(loop, deadline)

    async def _connect(self, deadline: float) -> _Protocol:
        loop = asyncio.get_running_loop()
        if self._connecting is not None:
            try:
                return await asyncio.wait_for(
                    asyncio.shield(self._connecting), max(0.0, deadline - loop.time())
                )
            except TimeoutError:
                raise StoreUnavailable(
                    f"redis: cannot connect within {self.timeout:g} s"
                ) from None
        self._connecting = loop.create_future()
        try:
            protocol = await asyncio.wait_for(
                self._open(deadline), max(0.0, deadline - loop.time())
            )
        except (OSError, TimeoutError, StoreUnavailable, ssl.SSLError) as exc:
            error = exc if isinstance(exc, StoreUnavailable) else StoreUnavailable(
                f"redis: cannot connect to {self.endpoint.describe()} ({_reason(exc)})"
            )
            self._connecting.set_exception(error)
            self._connecting.exception()  # retrieved: waiters re-raise it
            self._connecting = None
            raise error from None
        self._connecting.set_result(protocol)
        self._connecting = None
        self._protocol = protocol
        return protocol

    async def _open(self, deadline: float) -> _Protocol:
        loop = asyncio.get_running_loop()
        ep = self.endpoint
        if ep.path:
            _, protocol = await loop.create_unix_connection(lambda: _Protocol(self), ep.path)
        else:
            context = None
            if ep.tls:
                context = ssl.create_default_context(cafile=ep.tls_ca_file or None)
            transport, protocol = await loop.create_connection(
                lambda: _Protocol(self), ep.host, ep.port, ssl=context,
                server_hostname=ep.host if context is not None else None,
            )
            if _connected_to_itself(transport):
                # With no server listening, a loopback connect can pick the target
                # port as its own source port and connect to itself (TCP
                # simultaneous open): nobody answers, and the port stays taken, so
                # Redis cannot bind it when it restarts. Count it as refused.
                transport.abort()
                raise StoreUnavailable(
                    f"redis: cannot connect to {ep.describe()} (connection refused)"
                )
        self._protocol = protocol
        try:
            if ep.password:
                auth = (ep.username, ep.password) if ep.username else (ep.password,)
                self._check_reply(await self.call("AUTH", *auth, deadline=deadline))
            if ep.db:
                self._check_reply(await self.call("SELECT", ep.db, deadline=deadline))
        except BaseException:
            self._protocol = None
            if protocol.transport is not None:
                protocol.transport.abort()
            raise
        return protocol

    def _check_reply(self, reply: Any) -> None:
        if isinstance(reply, hiredis.ReplyError):
            raise StoreUnavailable(f"redis: {self.endpoint.describe()}: {reply}")

    def drop(self, error: StoreUnavailable) -> None:
        """Forget the connection and fail every call waiting on it."""
        protocol, self._protocol = self._protocol, None
        if protocol is not None and protocol.transport is not None:
            protocol.transport.abort()
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        pending, self.pending = self.pending, collections.deque()
        for future, _ in pending:
            if not future.done():
                future.set_exception(error)

    async def aclose(self) -> None:
        self.drop(StoreUnavailable("redis: store closed"))


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate verify failed: {exc.verify_message}"
    if isinstance(exc, TimeoutError):
        return "timed out"
    return str(exc) or type(exc).__name__


def _connected_to_itself(transport: asyncio.BaseTransport) -> bool:
    sock = transport.get_extra_info("socket")
    if sock is None:
        return False
    try:
        return bool(sock.getsockname() == sock.getpeername())
    except OSError:
        return False
