"""Redis behind Sentinel: ask the sentinels where the master is, then talk to it.

The master is found with `SENTINEL get-master-addr-by-name` (sentinels in the order
given, the first that answers wins) and used over the same pipelined connection as
a single Redis. A master that cannot be reached, or that answers READONLY (it was
demoted in a failover), makes the link ask the sentinels again on the next call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from dataclasses import replace
from typing import Any

import hiredis

from ratelimit_service.stores import StoreUnavailable
from ratelimit_service.stores.link import (
    RedisOptions,
    checked,
    finish_script,
    script_command,
)
from ratelimit_service.stores.resp import Endpoint, RespConnection


class SentinelLink:
    """The current master of `master_name`, as the sentinels report it."""

    def __init__(
        self, sentinels: list[tuple[str, int]], master_name: str, options: RedisOptions
    ) -> None:
        if not sentinels:
            raise ValueError("sentinel needs at least one sentinel address")
        self.options = options
        self.master_name = master_name
        self.sentinels = [RespConnection(Endpoint(host, port), timeout=options.timeout)
                          for host, port in sentinels]
        self._template = Endpoint(username=options.username, password=options.password,
                                  tls=options.tls, tls_ca_file=options.tls_ca_file)
        self.master: RespConnection | None = None
        self.resolutions = 0

    def deadline(self) -> float:
        return asyncio.get_running_loop().time() + self.options.timeout

    def slot(self, key: str) -> int:
        return 0

    def script(
        self, slot: int, keys: Sequence[str], args: Sequence[Any], deadline: float
    ) -> Awaitable[list[Any]]:
        if self.master is None:
            return self._script(keys, args, deadline)
        first = self.master.send(script_command(keys, args), deadline)
        return self._finish(self.master, first, keys, args, deadline)

    async def _script(
        self, keys: Sequence[str], args: Sequence[Any], deadline: float
    ) -> list[Any]:
        master = await self._resolve(deadline)
        first = master.send(script_command(keys, args), deadline)
        return await self._finish(master, first, keys, args, deadline)

    async def _finish(
        self, master: RespConnection, first: Awaitable[Any], keys: Sequence[str],
        args: Sequence[Any], deadline: float,
    ) -> list[Any]:
        try:
            return await finish_script(master, first, keys, args, deadline)
        except StoreUnavailable as exc:
            if self.master is master and (
                "READONLY" in str(exc) or "cannot connect" in str(exc) or "lost" in str(exc)
                or "no reply" in str(exc)
            ):
                self.master = None  # ask the sentinels again next time
                await master.aclose()
            raise

    async def _resolve(self, deadline: float) -> RespConnection:
        errors = []
        for sentinel in self.sentinels:
            try:
                reply = await sentinel.call("SENTINEL", "get-master-addr-by-name",
                                            self.master_name, deadline=deadline)
            except StoreUnavailable as exc:
                errors.append(str(exc))
                continue
            if isinstance(reply, hiredis.ReplyError) or not reply:
                errors.append(f"{sentinel.endpoint.describe()}: {reply or 'unknown master'}")
                continue
            host, port = reply[0].decode(), int(reply[1])
            master = RespConnection(replace(self._template, host=host, port=port),
                                    timeout=self.options.timeout)
            self.master = master
            self.resolutions += 1
            return master
        raise StoreUnavailable(
            f"redis sentinel: no sentinel knows master '{self.master_name}' ({errors})"
        )

    async def _current(self, deadline: float) -> RespConnection:
        return self.master or await self._resolve(deadline)

    async def delete(self, keys: Sequence[str], deadline: float) -> int:
        if not keys:
            return 0
        master = await self._current(deadline)
        return int(checked(await master.call("DEL", *keys, deadline=deadline),
                           master.endpoint.describe()))

    async def ping(self, deadline: float) -> None:
        master = await self._current(deadline)
        checked(await master.call("PING", deadline=deadline), master.endpoint.describe())

    async def aclose(self) -> None:
        if self.master is not None:
            await self.master.aclose()
        for sentinel in self.sentinels:
            await sentinel.aclose()


def connect_sentinel(
    sentinels: list[tuple[str, int]], master: str, options: RedisOptions
) -> SentinelLink:
    """A link that follows the master named `master` (resolved lazily, on first use)."""
    return SentinelLink(sentinels, master, options)
