"""Redis Cluster: the store for limits shared by many replicas and machines.

Placement choice: keys keep the reference's names, without hash tags, so each
descriptor's counter hashes to its own slot and hot limits spread over the masters.
A Lua script may only touch keys of one slot, so a request's counters are grouped by
slot: one `EVALSHA` of the request script per slot (usually one per descriptor),
plus a `GET` of the previous window for a sliding-window limit (another slot). The
groups go to their masters concurrently, each over one pipelined connection per
node (`RespConnection`), so a request costs one round trip per node it touches, in
parallel, and never a cross-slot command. Each counter is atomic; a request's
counters on different slots are not one transaction (the reference's are not either).

The slot map comes from `CLUSTER SLOTS` on a seed (then any known node). A `MOVED`
reply (resharding, failover) refreshes it and the command is sent once more to the
new owner, which is safe: a MOVED command was not executed. `ASK` (a slot being
migrated, this key already on the target) sends `ASKING` and the command to the
target in one write. A node that cannot be reached fails the request
(StoreUnavailable) and marks the map stale, so the next request refreshes it and
follows a failover. `TRYAGAIN` and `CLUSTERDOWN` fail the request.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any, cast
from urllib.parse import quote

import hiredis
from redis.crc import key_slot

from ratelimit_service.algorithms import fixed_window
from ratelimit_service.model import Algorithm
from ratelimit_service.stores import StoreUnavailable
from ratelimit_service.stores.redis import (
    PendingCounter,
    RedisOptions,
    RedisStore,
    no_script_reply,
    raise_if_error,
    script_arguments,
)
from ratelimit_service.stores.resp import RespConnection
from ratelimit_service.stores.scripts import REQUEST_SCRIPT, REQUEST_SHA

SLOTS = 16384


class ClusterRouter:
    """Sends single-slot commands to the master owning the slot."""

    def __init__(self, seeds: list[tuple[str, int]], options: RedisOptions) -> None:
        if not seeds:
            raise ValueError("a cluster needs at least one seed node")
        self.seeds = list(seeds)
        self.options = options
        self.connections: dict[tuple[str, int], RespConnection] = {}
        self.slots: list[tuple[str, int] | None] = [None] * SLOTS
        self.refreshes = 0
        self._stale = True
        self._refreshing: asyncio.Future[None] | None = None

    def connection(self, node: tuple[str, int]) -> RespConnection:
        conn = self.connections.get(node)
        if conn is None:
            conn = RespConnection(self._url(node), timeout=self.options.timeout)
            self.connections[node] = conn
        return conn

    def _url(self, node: tuple[str, int]) -> str:
        scheme = "rediss" if self.options.tls else "redis"
        auth = ""
        if self.options.password:
            user = quote(self.options.username or "", safe="")
            auth = f"{user}:{quote(self.options.password, safe='')}@"
        return f"{scheme}://{auth}{node[0]}:{node[1]}"

    async def call(self, key: str, *command: Any) -> Any:
        """Run a command whose keys all live in `key`'s slot; returns the reply (a
        hiredis.ReplyError for command errors); StoreUnavailable when unreachable."""
        if self._stale:
            await self.refresh()
        slot = key_slot(key.encode())
        node = self.slots[slot]
        if node is None:
            raise StoreUnavailable(f"redis cluster: slot {slot} has no master")
        reply = await self._send(node, command)
        if isinstance(reply, hiredis.ReplyError):
            text = str(reply)
            if text.startswith("MOVED "):
                await self.refresh()
                target = _address(text.split()[2])
                return await self._send(target, command)
            if text.startswith("ASK "):
                # The slot is migrating and this key already moved: ask the target
                # once, without changing the map (ASKING + the command, adjacent).
                target = _address(text.split()[2])
                try:
                    _, reply = await self.connection(target).call_many(
                        [("ASKING",), command]
                    )
                except StoreUnavailable:
                    self._stale = True
                    raise
                return reply
            if text.startswith(("TRYAGAIN", "CLUSTERDOWN")):
                raise StoreUnavailable(f"redis cluster: {text}")
        return reply

    async def _send(self, node: tuple[str, int], command: tuple[Any, ...]) -> Any:
        try:
            return await self.connection(node).call(*command)
        except StoreUnavailable:
            self._stale = True  # maybe a failover: re-read the slot map next time
            raise

    async def refresh(self) -> None:
        """Re-read the slot map (one refresh at a time; concurrent callers share it)."""
        if self._refreshing is not None:
            await asyncio.shield(self._refreshing)
            return
        self._refreshing = asyncio.get_running_loop().create_future()
        try:
            await self._refresh()
            self._refreshing.set_result(None)
        except BaseException as exc:
            self._refreshing.set_exception(exc)
            self._refreshing.exception()  # retrieved here; waiters re-raise it
            raise
        finally:
            self._refreshing = None

    async def _refresh(self) -> None:
        candidates = list(dict.fromkeys([*self.seeds, *self.connections]))
        errors: list[str] = []
        for node in candidates:
            try:
                reply = await self.connection(node).call("CLUSTER", "SLOTS")
            except StoreUnavailable as exc:
                errors.append(str(exc))
                continue
            if isinstance(reply, hiredis.ReplyError):
                errors.append(str(reply))
                continue
            slots: list[tuple[str, int] | None] = [None] * SLOTS
            for start, end, master, *_ in reply:
                host = master[0].decode() or node[0]
                owner = (host, int(master[1]))
                for slot in range(int(start), int(end) + 1):
                    slots[slot] = owner
            self.slots = slots
            self._stale = False
            self.refreshes += 1
            return
        raise StoreUnavailable(f"redis cluster: no node answered CLUSTER SLOTS ({errors})")

    async def aclose(self) -> None:
        for conn in self.connections.values():
            await conn.aclose()


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def connect_cluster(nodes: list[tuple[str, int]], options: RedisOptions) -> ClusterRouter:
    """A router from seed nodes; it discovers the others (lazily, on first use)."""
    return ClusterRouter(nodes, options)


class ClusterStore(RedisStore):
    """RedisStore over a ClusterRouter: one script per slot, all slots concurrently."""

    def __init__(
        self, router: ClusterRouter, *, local_cache_bytes: int = 0, stop_when_over: bool = False
    ) -> None:
        super().__init__(router, local_cache_bytes=local_cache_bytes,
                         stop_when_over=stop_when_over)
        self.router = router

    async def _run(self, pending: list[PendingCounter], now_ms: int) -> list[tuple[Any, ...]]:
        if any(p.stop for p in pending):
            pending = await self._charge(pending)
        groups: dict[int, list[int]] = {}
        for i, p in enumerate(pending):
            groups.setdefault(key_slot(p.key.encode()), []).append(i)
        previous = [i for i, p in enumerate(pending)
                    if p.op.limit.algorithm is Algorithm.SLIDING_WINDOW]
        calls = [self._run_slot([pending[i] for i in indices], now_ms)
                 for indices in groups.values()]
        calls += [self.router.call(pending[i].other, "GET", pending[i].other) for i in previous]
        replies = await asyncio.gather(*calls, return_exceptions=True)
        for reply in replies:
            if isinstance(reply, BaseException):
                raise reply if isinstance(reply, StoreUnavailable) else StoreUnavailable(
                    f"redis cluster: {reply}"
                )
        raw: list[tuple[Any, ...]] = [()] * len(pending)
        slot_replies = cast("list[list[tuple[Any, ...]]]", replies[: len(groups)])
        for indices, values in zip(groups.values(), slot_replies, strict=True):
            for i, triple in zip(indices, values, strict=True):
                raw[i] = triple
        for i, reply in zip(previous, replies[len(groups) :], strict=True):
            raise_if_error(reply)
            raw[i] = (raw[i][0], reply or 0, 0)
        return raw

    async def _charge(self, pending: list[PendingCounter]) -> list[PendingCounter]:
        """STOP_CACHE_KEY_INCREMENT_WHEN_OVERLIMIT across slots: read the fixed-window
        counts first (a second round trip, as the reference), then decide the charges."""
        fixed = [i for i, p in enumerate(pending) if p.stop]
        replies = await asyncio.gather(
            *(self.router.call(pending[i].key, "GET", pending[i].key) for i in fixed)
        )
        for reply in replies:
            raise_if_error(reply)
        charges = fixed_window.charged_hits(
            [int(r or 0) for r in replies],
            [pending[i].op.hits for i in fixed],
            [pending[i].op.limit.requests_per_unit for i in fixed],
            cached_over=False,
        )
        out = list(pending)
        for i, charge in zip(fixed, charges, strict=True):
            out[i] = dataclasses.replace(pending[i], charge=charge, stop=False)
        return out

    async def _run_slot(self, subset: list[PendingCounter], now_ms: int) -> list[tuple[Any, ...]]:
        keys, argv = script_arguments(subset, now_ms, previous_inline=False)
        reply = await self.router.call(keys[0], "EVALSHA", REQUEST_SHA, len(keys), *keys, *argv)
        if no_script_reply(reply):  # first use on this node: EVAL loads the script
            reply = await self.router.call(
                keys[0], "EVAL", REQUEST_SCRIPT, len(keys), *keys, *argv
            )
        raise_if_error(reply)
        return [tuple(reply[3 * i : 3 * i + 3]) for i in range(len(subset))]
