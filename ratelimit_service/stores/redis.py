"""Redis counters: every operation of one request in one round trip.

Keys are the reference's (`prefix domain_key_value_..._ window-start`), so counts are
exact and windows align across replicas; each expires with its window.

One `EVALSHA` per request runs all its counters in one atomic script (fixed window:
INCRBY + EXPIRE when the window key is created; sliding: the same + GET of the
previous window; GCRA: read-modify-write of `(fill, last_ms)`), over a lean pipelined
connection (`stores.resp`); behind Sentinel, over redis-py with concurrent requests
sharing pipelines (`stores.batching`). Redis Cluster groups the counters per slot
(`stores.cluster`). Keys found over the limit are remembered locally until their window ends
(or, for GCRA, until the bucket has room again): a client hammering an exhausted
limit costs no Redis trip. Counts only grow within a window, so the cache never
admits more. Connection errors surface as `StoreUnavailable`; the client reconnects
on the next call.
"""

from __future__ import annotations

import dataclasses
import math
from collections import OrderedDict
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import Any

import hiredis
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError

from ratelimit_service.algorithms import fixed_window, sliding_window
from ratelimit_service.model import Algorithm, CounterOp, Usage
from ratelimit_service.stores import StoreUnavailable
from ratelimit_service.stores.batching import Command, PipelineBatcher
from ratelimit_service.stores.resp import RespConnection
from ratelimit_service.stores.scripts import REQUEST_SCRIPT, REQUEST_SHA

# Rough cost of one local-cache entry (key, expiry, dict slot), to turn the reference's
# LOCAL_CACHE_SIZE_IN_BYTES into a number of entries.
_ENTRY_BYTES = 128


class OverLimitCache:
    """Keys known to be over their limit, each until a deadline; bounded (LRU)."""

    def __init__(self, size_bytes: int) -> None:
        self.max_entries = max(0, size_bytes // _ENTRY_BYTES)
        self._until: OrderedDict[str, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._until)

    def over(self, key: str, now: float) -> bool:
        return self.over_until(key, now) is not None

    def over_until(self, key: str, now: float) -> float | None:
        """When `key` stops being known over its limit; None if it is not."""
        until = self._until.get(key)
        if until is None:
            return None
        if until <= now:
            del self._until[key]
            return None
        return until

    def add(self, key: str, until: float) -> None:
        if self.max_entries == 0:
            return
        if key not in self._until and len(self._until) >= self.max_entries:
            self._until.popitem(last=False)
        self._until[key] = until


@dataclass(frozen=True, slots=True)
class PendingCounter:
    index: int
    op: CounterOp
    key: str
    other: str  # sliding window: the previous window's key; else the key again
    charge: int  # hits to add (0 under STOP_CACHE_KEY_INCREMENT_WHEN_OVERLIMIT rules)
    stop: bool = False  # let the script apply STOP_CACHE_KEY_INCREMENT_WHEN_OVERLIMIT


class RedisStore:
    """A CounterStore on one Redis: a RespConnection, or a redis-py client (sentinel)."""

    def __init__(
        self,
        client: Any,
        *,
        local_cache_bytes: int = 0,
        also_close: Sequence[Any] = (),
        stop_when_over: bool = False,
    ) -> None:
        self.client = client
        self.stop_when_over = stop_when_over  # STOP_CACHE_KEY_INCREMENT_WHEN_OVERLIMIT
        self.also_close = also_close  # e.g. Sentinel's own connections
        self.local_cache = OverLimitCache(local_cache_bytes)
        self.connection = client if isinstance(client, RespConnection) else None
        # redis-py clients: concurrent requests share pipelines.
        self.batcher = PipelineBatcher(client)

    async def apply(self, ops: Sequence[CounterOp], now: float) -> list[Usage]:
        usages: list[Usage | None] = [None] * len(ops)
        pending: list[PendingCounter] = []
        cached_over = False
        for index, op in enumerate(ops):
            unit = op.limit.unit
            algorithm = op.limit.algorithm
            if algorithm is Algorithm.GCRA:
                key = f"{op.key}gcra"
                until = self.local_cache.over_until(key, now)
                if until is not None:
                    usages[index] = _cached(op, math.ceil(until - now))
                    continue
                pending.append(PendingCounter(index, op, key, key, op.hits))
            elif algorithm is Algorithm.SLIDING_WINDOW:
                key, previous = sliding_window.keys(op.key, now, unit)
                pending.append(PendingCounter(index, op, key, previous, op.hits))
            else:
                key = fixed_window.window_key(op.key, now, unit)
                if self.local_cache.over(key, now):
                    usages[index] = _cached(op, fixed_window.reset_seconds(now, unit))
                    cached_over = True
                    continue
                pending.append(PendingCounter(index, op, key, key, op.hits, self.stop_when_over))
        if pending and self.stop_when_over and cached_over:
            # A counter of this request is already over: the others are not charged.
            pending = [
                dataclasses.replace(p, charge=0, stop=False)
                if p.op.limit.algorithm is Algorithm.FIXED_WINDOW else p
                for p in pending
            ]
        if pending:
            raw = await self._run(pending, round(now * 1000))
            for p, values in zip(pending, raw, strict=True):
                usages[p.index] = self._usage(p, values, now)
        return [u for u in usages if u is not None]

    async def _run(self, pending: list[PendingCounter], now_ms: int) -> list[tuple[Any, ...]]:
        """All counters in one script call: (count|before, previous|after, fill) each."""
        keys, argv = script_arguments(pending, now_ms, previous_inline=True)
        reply = await self._call(keys[0], ("EVALSHA", REQUEST_SHA, len(keys), *keys, *argv))
        if no_script_reply(reply):
            # First use on this server (or after a restart or SCRIPT FLUSH): EVAL runs
            # the script and caches it for the next EVALSHA.
            reply = await self._call(keys[0], ("EVAL", REQUEST_SCRIPT, len(keys), *keys, *argv))
        raise_if_error(reply)
        return [tuple(reply[3 * i : 3 * i + 3]) for i in range(len(pending))]

    def _call(self, key: str, command: Command) -> Awaitable[Any]:
        # Returns the connection's own awaitable (no coroutine of ours in between):
        # every await level costs on each resumption of this hot path.
        del key  # one Redis: every key lives here
        if self.connection is not None:
            return self.connection.send(command)
        return self._batched(command)

    async def _batched(self, command: Command) -> Any:
        (reply,) = await self.batcher.execute([command])
        return reply

    def _usage(self, p: PendingCounter, values: tuple[Any, ...], now: float) -> Usage:
        op, unit = p.op, p.op.limit.unit
        if op.limit.algorithm is Algorithm.GCRA:
            before, after, fill = int(values[0]), int(values[1]), int(values[2])
            rate = max(1, op.limit.requests_per_unit)
            window_ms = unit.seconds * 1000
            usage = Usage(before, after, math.ceil(fill / (rate * 1000)))
            if after > op.limit.requests_per_unit:
                # Room for one more hit once fill + window <= rate * window.
                wait_ms = max(0, fill + window_ms - op.limit.requests_per_unit * window_ms) / rate
                self.local_cache.add(p.key, now + wait_ms / 1000)
            return usage
        if op.limit.algorithm is Algorithm.SLIDING_WINDOW:
            return sliding_window.usage(int(values[0]), int(values[1]), op.hits, now, unit)
        usage = fixed_window.usage(int(values[0]), op.hits, now, unit)
        if usage.after > op.limit.requests_per_unit:
            self.local_cache.add(p.key, fixed_window.window_start(now, unit) + unit.seconds)
        return usage

    async def close(self) -> None:
        await self.batcher.close()
        await self.client.aclose()
        for other in self.also_close:
            await other.aclose()


def script_arguments(
    pending: Sequence[PendingCounter], now_ms: int, *, previous_inline: bool
) -> tuple[list[str], list[Any]]:
    """KEYS and ARGV of REQUEST_SCRIPT for these counters (see stores.scripts).

    With `previous_inline=False` (cluster: the previous window may be in another
    slot) a sliding-window counter is sent as a fixed one kept two windows, and the
    caller reads the previous window itself.
    """
    keys: list[str] = []
    argv: list[Any] = [now_ms]
    for p in pending:
        limit = p.op.limit
        if limit.algorithm is Algorithm.GCRA:
            keys += (p.key, p.key)
            argv += ("g", p.charge, limit.requests_per_unit, limit.unit.seconds * 1000)
        elif limit.algorithm is Algorithm.SLIDING_WINDOW and previous_inline:
            keys += (p.key, p.other)
            argv += ("s", p.charge, 2 * limit.unit.seconds, 0)
        else:
            ttl = limit.unit.seconds * (2 if limit.algorithm is Algorithm.SLIDING_WINDOW else 1)
            keys += (p.key, p.key)
            if p.stop:
                argv += ("F", p.charge, ttl, limit.requests_per_unit)
            else:
                argv += ("f", p.charge, ttl, 0)
    return keys, argv


def no_script_reply(reply: Any) -> bool:
    if isinstance(reply, NoScriptError):
        return True
    return isinstance(reply, hiredis.ReplyError) and str(reply).startswith("NOSCRIPT")


def raise_if_error(reply: Any) -> None:
    if isinstance(reply, Exception):
        raise StoreUnavailable(f"redis: {reply}")


def _cached(op: CounterOp, reset_seconds: int) -> Usage:
    over = op.limit.requests_per_unit + op.hits
    return Usage(over, over, reset_seconds, from_local_cache=True)


@dataclass(frozen=True, slots=True)
class RedisOptions:
    """Connection settings shared by the single, sentinel and cluster clients."""

    timeout: float = 1.0
    pool_size: int = 64
    username: str | None = None
    password: str | None = None
    tls: bool = False


def retry_policy() -> Retry:
    # One immediate retry: a pooled connection broken by a Redis restart fails on send
    # and succeeds on a fresh connection; more retries would only delay fail-open/closed.
    return Retry(NoBackoff(), 1)


def connect_single(url: str, options: RedisOptions) -> RespConnection:
    """A connection for `redis://`, `rediss://` or `unix://` URLs (connects on first use)."""
    return RespConnection(url, timeout=options.timeout)


def connect_sentinel(
    sentinels: list[tuple[str, int]], master: str, options: RedisOptions
) -> tuple[aioredis.Redis, list[aioredis.Redis]]:
    """A client that follows the master named `master`, and the sentinels' clients."""
    from redis.asyncio.sentinel import Sentinel  # noqa: PLC0415 - only for sentinel users

    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        sentinels,
        socket_timeout=options.timeout,
        socket_connect_timeout=options.timeout,
    )
    client: aioredis.Redis = sentinel.master_for(
        master,
        socket_timeout=options.timeout,
        socket_connect_timeout=options.timeout,
        username=options.username,
        password=options.password,
        ssl=options.tls,
        retry=retry_policy(),
    )
    return client, list(sentinel.sentinels)
