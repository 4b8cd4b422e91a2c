"""Redis Cluster: the link for limits shared by many replicas and machines.

Placement: keys keep the reference's names, without hash tags, so each descriptor's
counter hashes to its own slot and hot limits spread over the masters; the keys of
one descriptor's stacked windows (and a sliding window's two keys) share a hash tag,
so they sit in one slot. A script may only touch keys of one slot, so the store
sends one request-script call per slot, and every call to a master goes over one
pipelined connection to it: a request costs one round trip per node it touches, in
parallel, never a cross-slot command.

The slot map comes from `CLUSTER SLOTS` on a seed (then any known node). A `MOVED`
reply (resharding, failover) refreshes it and the command is sent once more to the
new owner, which is safe: a MOVED command was not executed. `ASK` (a slot being
migrated, this key already on the target) sends `ASKING` and the command to the
target in one write. A node that cannot be reached fails the call (StoreUnavailable)
and marks the map stale, so the next call refreshes it and follows a failover.
`TRYAGAIN` and `CLUSTERDOWN` fail the call. Every step counts against the call's
one deadline.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from typing import Any

import hiredis
from redis.crc import key_slot

from ratelimit_service.stores import StoreUnavailable
from ratelimit_service.stores.link import (
    RedisOptions,
    checked,
    is_noscript,
    script_command,
)
from ratelimit_service.stores.resp import Command, Endpoint, RespConnection
from ratelimit_service.stores.scripts import REQUEST_SCRIPT

SLOTS = 16384
Node = tuple[str, int]


class ClusterLink:
    """Sends single-slot commands to the master owning the slot."""

    def __init__(self, seeds: list[Node], options: RedisOptions) -> None:
        if not seeds:
            raise ValueError("a cluster needs at least one seed node")
        self.seeds = list(seeds)
        self.options = options
        self.connections: dict[Node, RespConnection] = {}
        self.slots: list[Node | None] = [None] * SLOTS
        self.refreshes = 0
        self._stale = True
        self._refreshing: asyncio.Future[None] | None = None

    def deadline(self) -> float:
        return asyncio.get_running_loop().time() + self.options.timeout

    def slot(self, key: str) -> int:
        return int(key_slot(key.encode()))

    def connection(self, node: Node) -> RespConnection:
        conn = self.connections.get(node)
        if conn is None:
            o = self.options
            endpoint = Endpoint(node[0], node[1], username=o.username, password=o.password,
                                tls=o.tls, tls_ca_file=o.tls_ca_file)
            conn = RespConnection(endpoint, timeout=o.timeout)
            self.connections[node] = conn
        return conn

    def script(
        self, slot: int, keys: Sequence[str], args: Sequence[Any], deadline: float
    ) -> Awaitable[list[Any]]:
        command = script_command(keys, args)
        node = None if self._stale else self.slots[slot]
        if node is None:
            return self._script(slot, command, keys, args, deadline)
        try:
            first = self.connection(node).send(command, deadline)
        except StoreUnavailable:
            self._stale = True
            raise
        return self._finish(node, first, command, keys=keys, args=args, deadline=deadline)

    async def _script(
        self, slot: int, command: Command, keys: Sequence[str], args: Sequence[Any],
        deadline: float,
    ) -> list[Any]:
        node = await self._owner(slot, deadline)
        first = self._send(node, command, deadline)
        return await self._finish(node, first, command, keys=keys, args=args,
                                  deadline=deadline)

    async def _finish(
        self, node: Node, first: Awaitable[Any], command: Command, *, keys: Sequence[str],
        args: Sequence[Any], deadline: float,
    ) -> list[Any]:
        reply = await self._answer(node, first, command, deadline)
        if is_noscript(reply):  # first use on this node: EVAL loads the script
            eval_command = ("EVAL", REQUEST_SCRIPT, len(keys), *keys, *args)
            reply = await self._answer(node, self._send(node, eval_command, deadline),
                                       eval_command, deadline)
        result: list[Any] = checked(reply, f"cluster node {node[0]}:{node[1]}")
        return result

    async def call(self, key: str, *command: Any, deadline: float) -> Any:
        """Run a command whose keys all live in `key`'s slot; returns the reply (a
        hiredis.ReplyError for command errors); StoreUnavailable when unreachable."""
        node = await self._owner(self.slot(key), deadline)
        return await self._answer(node, self._send(node, command, deadline), command, deadline)

    async def _owner(self, slot: int, deadline: float) -> Node:
        if self._stale:
            await self.refresh(deadline)
        node = self.slots[slot]
        if node is None:
            raise StoreUnavailable(f"redis cluster: slot {slot} has no master")
        return node

    async def _answer(
        self, node: Node, sent: Awaitable[Any], command: Command, deadline: float
    ) -> Any:
        """The reply to `sent`, following one MOVED or ASK redirection."""
        try:
            reply = await sent
        except StoreUnavailable:
            self._stale = True  # maybe a failover: re-read the slot map next time
            raise
        if not isinstance(reply, hiredis.ReplyError):
            return reply
        text = str(reply)
        if text.startswith("MOVED "):
            await self.refresh(deadline)
            target = _address(text.split()[2])
            return await self._checked_send(target, command, deadline)
        if text.startswith("ASK "):
            # The slot is migrating and this key already moved: ask the target once,
            # without changing the map (ASKING + the command, adjacent on the wire).
            target = _address(text.split()[2])
            try:
                _, answer = await self.connection(target).call_many(
                    [("ASKING",), command], deadline=deadline
                )
            except StoreUnavailable:
                self._stale = True
                raise
            return answer
        if text.startswith(("TRYAGAIN", "CLUSTERDOWN")):
            raise StoreUnavailable(f"redis cluster: {text}")
        return reply

    def _send(self, node: Node, command: Command, deadline: float) -> Awaitable[Any]:
        return self.connection(node).send(command, deadline)

    async def _checked_send(self, node: Node, command: Command, deadline: float) -> Any:
        try:
            return await self._send(node, command, deadline)
        except StoreUnavailable:
            self._stale = True
            raise

    async def refresh(self, deadline: float | None = None) -> None:
        """Re-read the slot map (one refresh at a time; concurrent callers share it)."""
        if deadline is None:
            deadline = self.deadline()
        if self._refreshing is not None:
            loop = asyncio.get_running_loop()
            try:
                await asyncio.wait_for(asyncio.shield(self._refreshing),
                                       max(0.0, deadline - loop.time()))
            except TimeoutError:
                raise StoreUnavailable("redis cluster: slot map refresh timed out") from None
            return
        self._refreshing = asyncio.get_running_loop().create_future()
        try:
            await self._refresh(deadline)
            self._refreshing.set_result(None)
        except BaseException as exc:
            self._refreshing.set_exception(exc)
            self._refreshing.exception()  # retrieved here; waiters re-raise it
            raise
        finally:
            self._refreshing = None

    async def _refresh(self, deadline: float) -> None:
        candidates = list(dict.fromkeys([*self.seeds, *self.connections]))
        errors: list[str] = []
        for node in candidates:
            try:
                reply = await self.connection(node).call("CLUSTER", "SLOTS", deadline=deadline)
            except StoreUnavailable as exc:
                errors.append(str(exc))
                continue
            if isinstance(reply, hiredis.ReplyError):
                errors.append(f"{node[0]}:{node[1]}: {reply}")
                continue
            slots: list[Node | None] = [None] * SLOTS
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

    async def delete(self, keys: Sequence[str], deadline: float) -> int:
        replies = await asyncio.gather(*(self.call(k, "DEL", k, deadline=deadline)
                                         for k in keys))
        return sum(int(checked(r, "cluster")) for r in replies)

    async def ping(self, deadline: float) -> None:
        await self.refresh(deadline)
        masters = sorted({node for node in self.slots if node is not None})
        for node in masters:
            checked(await self.connection(node).call("PING", deadline=deadline),
                    f"cluster node {node[0]}:{node[1]}")

    async def aclose(self) -> None:
        for conn in self.connections.values():
            await conn.aclose()


def _address(text: str) -> Node:
    host, _, port = text.rpartition(":")
    return host, int(port)


def connect_cluster(nodes: list[Node], options: RedisOptions) -> ClusterLink:
    """A link from seed nodes; it discovers the others (lazily, on first use)."""
    return ClusterLink(nodes, options)
