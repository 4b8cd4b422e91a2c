"""Redis counters: every operation of one request in one pipelined round trip.

Per descriptor, by algorithm (keys as the reference: `prefix domain_key_value_ window`):
- fixed_window: `INCRBY key hits` + `EXPIRE key window` (the reference's pipeline);
- sliding_window: the same on the current window (kept two windows) + `GET previous`;
- gcra: one `EVALSHA` of a short Lua script (read-modify-write of `(fill, last_ms)`).
Each command touches one key and is atomic on its own, so no transaction is needed
and the same pipeline works on Redis Cluster (split per node, sent concurrently).

Keys found over the limit are remembered locally until their window ends (or, for
GCRA, until the bucket has room again): a client hammering an exhausted limit costs
no Redis trip. Counts only grow within a window, so the cache never admits more.
Connection errors surface as `StoreUnavailable`; the client reconnects on the next call.
"""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError, RedisError

from ratelimit_service.algorithms import fixed_window, sliding_window
from ratelimit_service.model import Algorithm, CounterOp, Usage
from ratelimit_service.stores import StoreUnavailable

GCRA_SCRIPT = """
local now = tonumber(ARGV[1])
local hits = tonumber(ARGV[2])
local rate = tonumber(ARGV[3])
local window = tonumber(ARGV[4])
local state = redis.call('HMGET', KEYS[1], 'f', 't')
local fill = tonumber(state[1]) or 0
local last = tonumber(state[2]) or now
local elapsed = now - last
if elapsed < 0 then elapsed = 0 end
fill = fill - elapsed * rate
if fill < 0 then fill = 0 end
local before = math.ceil(fill / window)
local wanted = fill + hits * window
if wanted <= rate * window then fill = wanted end
redis.call('HSET', KEYS[1], 'f', string.format('%.0f', fill), 't', string.format('%.0f', now))
local keep = math.ceil(fill / math.max(rate, 1)) + 1000
redis.call('PEXPIRE', KEYS[1], keep)
return {before, before + hits, string.format('%.0f', fill)}
"""
GCRA_SHA = hashlib.sha1(GCRA_SCRIPT.encode(), usedforsecurity=False).hexdigest()

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
        until = self._until.get(key)
        if until is None:
            return False
        if until <= now:
            del self._until[key]
            return False
        return True

    def add(self, key: str, until: float) -> None:
        if self.max_entries == 0:
            return
        if key not in self._until and len(self._until) >= self.max_entries:
            self._until.popitem(last=False)
        self._until[key] = until


@dataclass(frozen=True, slots=True)
class _Pending:
    index: int
    op: CounterOp
    key: str
    first: int  # position of the op's first command in the pipeline
    count: int


class RedisStore:
    """A CounterStore on Redis or Redis Cluster (any client with `.pipeline()`)."""

    def __init__(self, client: Any, *, local_cache_bytes: int = 0) -> None:
        self.client = client
        self.local_cache = OverLimitCache(local_cache_bytes)

    async def apply(self, ops: Sequence[CounterOp], now: float) -> list[Usage]:
        usages: list[Usage | None] = [None] * len(ops)
        pipe = self.client.pipeline(transaction=False)
        pending: list[_Pending] = []
        position = 0
        now_ms = round(now * 1000)
        for index, op in enumerate(ops):
            unit = op.limit.unit
            algorithm = op.limit.algorithm
            if algorithm is Algorithm.GCRA:
                key = f"{op.key}gcra"
                if self.local_cache.over(key, now):
                    usages[index] = _cached(op, 1)
                    continue
                window_ms = unit.seconds * 1000
                pipe.execute_command(
                    "EVALSHA", GCRA_SHA, 1, key, now_ms, op.hits, op.limit.requests_per_unit,
                    window_ms,
                )
                count = 1
            elif algorithm is Algorithm.SLIDING_WINDOW:
                key, previous = sliding_window.keys(op.key, now, unit)
                pipe.execute_command("INCRBY", key, op.hits)
                pipe.execute_command("EXPIRE", key, 2 * unit.seconds)
                pipe.execute_command("GET", previous)
                count = 3
            else:
                key = fixed_window.window_key(op.key, now, unit)
                if self.local_cache.over(key, now):
                    usages[index] = _cached(op, fixed_window.reset_seconds(now, unit))
                    continue
                pipe.execute_command("INCRBY", key, op.hits)
                pipe.execute_command("EXPIRE", key, unit.seconds)
                count = 2
            pending.append(_Pending(index, op, key, position, count))
            position += count
        if pending:
            results = await self._execute(pipe)
            retry = [p for p in pending if isinstance(results[p.first], NoScriptError)]
            if retry:
                await self._eval_scripts(retry, results, now_ms)
            for p in pending:
                usages[p.index] = self._usage(p, results, now)
        return [u for u in usages if u is not None]

    async def _execute(self, pipe: Any) -> list[Any]:
        try:
            results: list[Any] = await pipe.execute(raise_on_error=False)
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"redis: {exc}") from exc
        return results

    async def _eval_scripts(self, retry: list[_Pending], results: list[Any], now_ms: int) -> None:
        # First use of the script on this server (or after a restart/flush): EVAL loads it.
        pipe = self.client.pipeline(transaction=False)
        for p in retry:
            window_ms = p.op.limit.unit.seconds * 1000
            pipe.execute_command(
                "EVAL", GCRA_SCRIPT, 1, p.key, now_ms, p.op.hits,
                p.op.limit.requests_per_unit, window_ms,
            )
        for p, result in zip(retry, await self._execute(pipe), strict=True):
            results[p.first] = result

    def _usage(self, p: _Pending, results: list[Any], now: float) -> Usage:
        chunk = results[p.first : p.first + p.count]
        for item in chunk:
            if isinstance(item, Exception):
                raise StoreUnavailable(f"redis: {item}")
        op, unit = p.op, p.op.limit.unit
        if op.limit.algorithm is Algorithm.GCRA:
            before, after, fill = int(chunk[0][0]), int(chunk[0][1]), int(chunk[0][2])
            rate = max(1, op.limit.requests_per_unit)
            window_ms = unit.seconds * 1000
            usage = Usage(before, after, math.ceil(fill / (rate * 1000)))
            if after > op.limit.requests_per_unit:
                # Room for one more hit once fill + window <= rate * window.
                wait_ms = max(0, fill + window_ms - op.limit.requests_per_unit * window_ms) / rate
                self.local_cache.add(p.key, now + wait_ms / 1000)
            return usage
        if op.limit.algorithm is Algorithm.SLIDING_WINDOW:
            previous = int(chunk[2]) if chunk[2] is not None else 0
            return sliding_window.usage(int(chunk[0]), previous, op.hits, now, unit)
        usage = fixed_window.usage(int(chunk[0]), op.hits, now, unit)
        if usage.after > op.limit.requests_per_unit:
            self.local_cache.add(p.key, fixed_window.window_start(now, unit) + unit.seconds)
        return usage

    async def close(self) -> None:
        await self.client.aclose()


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


def connect_single(url: str, options: RedisOptions) -> aioredis.Redis:
    """A client for `redis://`, `rediss://` or `unix://` URLs (lazy: connects on first use)."""
    kwargs: dict[str, Any] = {
        "socket_timeout": options.timeout,
        "socket_connect_timeout": options.timeout,
        "max_connections": options.pool_size,
        "retry": retry_policy(),
    }
    if options.username:
        kwargs["username"] = options.username
    if options.password:
        kwargs["password"] = options.password
    client: aioredis.Redis = aioredis.Redis.from_url(url, **kwargs)
    return client


def connect_sentinel(
    sentinels: list[tuple[str, int]], master: str, options: RedisOptions
) -> aioredis.Redis:
    """A client that follows the master named `master` through the given sentinels."""
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
    return client
