"""The one seam between the Redis store and a Redis deployment: `RedisLink`.

The store (stores/redis.py) only builds request-script calls; a link runs them on
one Redis (`SingleLink`, here), behind Sentinel (stores/sentinel.py) or on a Redis
Cluster (stores/cluster.py). Keys of one `slot` may share one script call; a single
Redis has one slot. Every call carries a deadline (loop time), never a bare timeout.
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import hiredis

from ratelimit_service.stores import StoreUnavailable
from ratelimit_service.stores.resp import Command, RespConnection
from ratelimit_service.stores.scripts import REQUEST_SCRIPT, REQUEST_SHA


@dataclass(frozen=True, slots=True)
class RedisOptions:
    """Connection settings shared by the single, sentinel and cluster links."""

    timeout: float = 1.0
    username: str | None = None
    password: str | None = None
    tls: bool = False
    tls_ca_file: str = ""  # rediss://: verify the server against this CA file


class RedisLink(Protocol):
    """Runs the request script, and the few admin commands, on some Redis deployment."""

    def deadline(self) -> float:
        """The deadline of a call starting now (loop time + the store timeout)."""
        ...

    def slot(self, key: str) -> int:
        """Keys with the same slot may be touched by one script call."""
        ...

    def script(
        self, slot: int, keys: Sequence[str], args: Sequence[Any], deadline: float
    ) -> Awaitable[list[Any]]:
        """Run the request script (written at once when connected); its reply, or
        StoreUnavailable (unreachable, too slow, or Redis refused the script)."""
        ...

    async def delete(self, keys: Sequence[str], deadline: float) -> int:
        """DEL these keys (each may be in another slot); how many existed."""
        ...

    async def ping(self, deadline: float) -> None:
        """Raise StoreUnavailable, with Redis' reason, unless every node answers."""
        ...

    async def aclose(self) -> None: ...


def script_command(keys: Sequence[str], args: Sequence[Any]) -> Command:
    return ("EVALSHA", REQUEST_SHA, len(keys), *keys, *args)


def checked(reply: Any, where: str) -> Any:
    """The reply, or StoreUnavailable naming Redis' error."""
    if isinstance(reply, hiredis.ReplyError):
        raise StoreUnavailable(f"redis: {where}: {reply}")
    return reply


def is_noscript(reply: Any) -> bool:
    return isinstance(reply, hiredis.ReplyError) and str(reply).startswith("NOSCRIPT")


async def finish_script(
    connection: RespConnection, first: Awaitable[Any], keys: Sequence[str],
    args: Sequence[Any], deadline: float,
) -> list[Any]:
    """Await an EVALSHA; on NOSCRIPT (first use on this server, a restart, SCRIPT
    FLUSH) run EVAL, which also caches the script for the next EVALSHA."""
    reply = await first
    if is_noscript(reply):
        reply = await connection.call(
            "EVAL", REQUEST_SCRIPT, len(keys), *keys, *args, deadline=deadline
        )
    result: list[Any] = checked(reply, connection.endpoint.describe())
    return result


class SingleLink:
    """One Redis over one pipelined connection."""

    def __init__(self, connection: RespConnection) -> None:
        self.connection = connection

    def deadline(self) -> float:
        return self.connection.deadline()

    def slot(self, key: str) -> int:
        return 0

    def script(
        self, slot: int, keys: Sequence[str], args: Sequence[Any], deadline: float
    ) -> Awaitable[list[Any]]:
        first = self.connection.send(script_command(keys, args), deadline)
        return finish_script(self.connection, first, keys, args, deadline)

    async def delete(self, keys: Sequence[str], deadline: float) -> int:
        if not keys:
            return 0
        reply = await self.connection.call("DEL", *keys, deadline=deadline)
        return int(checked(reply, self.connection.endpoint.describe()))

    async def ping(self, deadline: float) -> None:
        checked(await self.connection.call("PING", deadline=deadline),
                self.connection.endpoint.describe())

    async def aclose(self) -> None:
        await self.connection.aclose()
