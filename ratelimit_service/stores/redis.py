"""Redis counters: the one store for a single Redis, Sentinel and Redis Cluster.

The store only builds request-script calls and runs them over a `RedisLink` (the
seam: stores/link.py, sentinel.py, cluster.py). Each counter's algorithm names its
keys and parameters and reads its reply; the script (stores/scripts.py) runs every
counter of a call atomically and applies the stop-increment rule inside Redis.

Round trips: all counters of one request that share a slot go in one EVALSHA (one
for a single Redis, however many descriptors and stacked windows; one per slot on a
cluster, all slots in parallel). Concurrent requests share calls: per slot at most
`max_in_flight` calls are outstanding, and requests arriving meanwhile leave
together in the next one, merged into one script call, as soon as one returns (an
idle store sends at the end of the current loop turn). So each request still costs
one round trip, and a busy store pays the per-call costs (syscalls, Lua call, reply
parse) once per batch. With a `pipeline_window` (the reference's
REDIS_PIPELINE_WINDOW) a request arriving within the window of the previous one
waits up to the window for others to join it: more requests per call under load,
at most the window of added latency, none for a request that comes alone.
`pipeline_limit` counters fill a call, which then leaves at once.

Keys found over their limit are remembered locally until their algorithm says they
can be under again (a window's end, a bucket's next free slot): a client hammering
an exhausted limit costs no Redis trip. A counter the store cannot count (Redis
down, too slow, or refusing that one key) comes back as an `uncounted` Usage; the
limiter applies the operator's failure mode to its descriptor alone.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ratelimit_service import charging
from ratelimit_service.algorithms import REGISTRY, CountingAlgorithm, algorithm_for
from ratelimit_service.algorithms.base import ScriptOp
from ratelimit_service.models import CounterOp, Usage, uncounted
from ratelimit_service.stores import StoreUnavailable
from ratelimit_service.stores.link import RedisLink, RedisOptions, SingleLink
from ratelimit_service.stores.metrics import REDIS_ERRORS, ROUND_TRIP_SECONDS, STORE_ERRORS
from ratelimit_service.stores.resp import RespConnection
from ratelimit_service.stores.target import parse_redis_url

__all__ = ["OverLimitCache", "RedisOptions", "RedisStore", "connect_single"]

# Rough cost of one local-cache entry (key, expiry, dict slot), to turn the reference's
# LOCAL_CACHE_SIZE_IN_BYTES into a number of entries.
_ENTRY_BYTES = 128
_ALONE = "-"
_PEEK = "p"


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

    def forget(self, key: str) -> None:
        self._until.pop(key, None)


@dataclass(slots=True)
class _Counters:
    """One request's counters as the store sends them."""

    ops: Sequence[CounterOp]
    algorithms: list[CountingAlgorithm]
    scripts: list[ScriptOp]
    hits: list[int]
    names: list[str]  # stop-rule group name, _ALONE or _PEEK, per counter


@dataclass(slots=True)
class _Batch:
    """Script calls of concurrent requests for one slot, merged into one."""

    deadline: float
    keys: list[str] = field(default_factory=list)
    args: list[Any] = field(default_factory=list)
    waiters: list[tuple[int, asyncio.Future[list[Any]]]] = field(default_factory=list)
    counters: int = 0


@dataclass(slots=True)
class _SlotQueue:
    batch: _Batch | None = None
    in_flight: int = 0
    scheduled: bool = False
    timer: asyncio.TimerHandle | None = None


class RedisStore:
    """A CounterStore on Redis, over any RedisLink."""

    def __init__(
        self,
        link: RedisLink,
        *,
        local_cache_bytes: int = 0,
        stop_when_over: bool = False,
        max_in_flight: int = 1,
        pipeline_window: float = 0.0,
        pipeline_limit: int = 512,
    ) -> None:
        self.link = link
        self.pipeline_window = pipeline_window
        self.pipeline_limit = max(1, pipeline_limit)
        self._last_submit = -1.0
        self.stop_when_over = stop_when_over  # STOP_CACHE_KEY_INCREMENT_WHEN_OVERLIMIT
        self.local_cache = OverLimitCache(local_cache_bytes)
        self.max_in_flight = max_in_flight
        self.calls_sent = 0  # script calls (each one EVALSHA on the wire)
        self._queues: dict[int, _SlotQueue] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._sequence = 0  # makes group names unique within a merged call
        STORE_ERRORS.inc(REDIS_ERRORS, 0)  # exported at 0 from the start, for rate()

    async def apply(self, ops: Sequence[CounterOp], now: float) -> list[Usage]:
        deadline = self.link.deadline()
        n = len(ops)
        algorithms = [REGISTRY[op.limit.algorithm] for op in ops]
        scripts = [a.script_op(op.key, op.limit, now)
                   for a, op in zip(algorithms, ops, strict=True)]
        usages: list[Usage | None] = [None] * n
        known = [False] * n
        cache = self.local_cache
        if cache.max_entries:
            for i, script in enumerate(scripts):
                until = cache.over_until(script.keys[0], now)
                if until is not None:
                    known[i] = True
                    over = ops[i].limit.capacity + ops[i].hits
                    usages[i] = Usage(over, over, math.ceil(until - now), from_local_cache=True)
        hits = [op.hits for op in ops]
        send = [i for i in range(n) if not known[i]] if cache.max_entries else list(range(n))
        if not send:
            return [u for u in usages if u is not None]
        link = self.link
        slots = {i: link.slot(scripts[i].keys[0]) for i in send}
        names = [_ALONE] * n
        counters = _Counters(ops, algorithms, scripts, hits, names)
        if self.stop_when_over or any(op.group != charging.ALONE for op in ops):
            groups = charging.groups_of(ops, stop_when_over=self.stop_when_over)
            many = charging.grouped(groups)
            if many and any(known):
                counters.hits = hits = charging.charges(hits, groups, [False] * n, known)
            known_groups = {g for g, k in zip(groups, known, strict=True) if k}
            self._sequence += 1
            for i, g in enumerate(groups):
                if g in many and g not in known_groups:
                    names[i] = f"{self._sequence}.{g}"
            crossing = _crossing_groups(send, groups, names, slots)
            if crossing:
                await self._charge_across_slots(
                    counters, [i for i in send if groups[i] in crossing], groups, slots,
                    deadline=deadline,
                )
        by_slot: dict[int, list[int]] = {}
        for i in send:
            by_slot.setdefault(slots[i], []).append(i)
        pending = [(indices, self._submit(slot, counters, indices, deadline))
                   for slot, indices in by_slot.items()]
        for indices, future in pending:
            try:
                reply = await future
            except StoreUnavailable as exc:
                for i in indices:
                    usages[i] = uncounted(str(exc))
                continue
            for j, i in enumerate(indices):
                usages[i] = self._usage(counters, i, reply[3 * j : 3 * j + 3], now)
        return [u if u is not None else uncounted("internal: no answer") for u in usages]

    def _usage(self, counters: _Counters, i: int, values: Sequence[Any], now: float) -> Usage:
        key, limit = counters.scripts[i].keys[0], counters.ops[i].limit
        if values[0] == b"E":
            reason = values[1].decode(errors="replace") if isinstance(values[1], bytes) else ""
            return uncounted(f"redis refused counter {key!r}: {reason}")
        algorithm = counters.algorithms[i]
        usage = algorithm.usage(values, counters.hits[i], limit, now)
        if usage.after > limit.capacity and self.local_cache.max_entries:
            until = algorithm.over_until(values, usage, limit, now)
            if until is not None and until > now:
                self.local_cache.add(key, until)
        return usage

    async def _charge_across_slots(
        self, counters: _Counters, members: list[int], groups: list[int],
        slots: dict[int, int], *, deadline: float,
    ) -> None:
        """A stop-increment group spread over cluster slots cannot be decided inside
        one script: ask every member first (a round trip that writes nothing, as the
        reference does on a cluster), then charge by the rule, group by group here."""
        names, counters.names = counters.names, [_PEEK] * len(counters.names)
        by_slot: dict[int, list[int]] = {}
        for i in members:
            by_slot.setdefault(slots[i], []).append(i)
        over = [False] * len(names)
        try:
            for slot, indices in by_slot.items():
                reply = await self._submit(slot, counters, indices, deadline)
                for j, i in enumerate(indices):
                    value = reply[3 * j + 1]
                    over[i] = value != b"E" and int(value) > counters.ops[i].limit.capacity
        finally:
            counters.names = names
        charged = charging.charges(
            [counters.hits[i] for i in members], [groups[i] for i in members],
            [over[i] for i in members],
        )
        for i, h in zip(members, charged, strict=True):
            counters.hits[i] = h
            counters.names[i] = _ALONE

    def _submit(
        self, slot: int, counters: _Counters, indices: list[int], deadline: float
    ) -> asyncio.Future[list[Any]]:
        queue = self._queues.get(slot)
        if queue is None:
            queue = self._queues[slot] = _SlotQueue()
        batch = queue.batch
        if batch is None:
            batch = queue.batch = _Batch(deadline)
        keys, args = batch.keys, batch.args
        for i in indices:
            script, limit = counters.scripts[i], counters.ops[i].limit
            keys += script.keys
            args += (limit.algorithm, counters.names[i], counters.hits[i], limit.capacity,
                     *script.params)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[Any]] = loop.create_future()
        batch.waiters.append((len(indices), future))
        batch.counters += len(indices)
        now = loop.time()
        if batch.counters >= self.pipeline_limit:
            self._flush(slot, queue, force=True)  # full: leaves now, even beside one in flight
        elif not queue.scheduled and queue.in_flight < self.max_in_flight:
            queue.scheduled = True
            window = self.pipeline_window
            if window and now - self._last_submit < window:
                queue.timer = loop.call_later(window, self._flush, slot, queue)
            else:
                loop.call_soon(self._flush, slot, queue)
        self._last_submit = now
        return future

    def _flush(self, slot: int, queue: _SlotQueue, *, force: bool = False) -> None:
        if queue.timer is not None:
            queue.timer.cancel()
            queue.timer = None
        queue.scheduled = False
        batch = queue.batch
        if batch is None or (queue.in_flight >= self.max_in_flight and not force):
            return  # a returning call sends what waits
        queue.batch = None
        queue.in_flight += 1
        self.calls_sent += 1
        started = time.perf_counter()
        sent = self.link.script(slot, batch.keys, batch.args, batch.deadline)
        task = asyncio.ensure_future(self._complete(slot, queue, batch, sent, started))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _complete(
        self, slot: int, queue: _SlotQueue, batch: _Batch, sent: Awaitable[list[Any]],
        started: float,
    ) -> None:
        error: StoreUnavailable | None = None
        reply: list[Any] = []
        try:
            reply = await sent
        except StoreUnavailable as exc:
            error = exc
        except Exception as exc:  # a bug or an unexpected reply: an outage, not a crash
            error = StoreUnavailable(f"redis: {type(exc).__name__}: {exc}")
        finally:
            queue.in_flight -= 1
            if queue.batch is not None:
                if not queue.scheduled:
                    self._flush(slot, queue)
            elif queue.in_flight == 0 and not queue.scheduled:
                self._queues.pop(slot, None)
        total = sum(count for count, _ in batch.waiters)
        if error is None and (not isinstance(reply, list) or len(reply) != 3 * total):
            error = StoreUnavailable("redis: unexpected reply to the request script")
        ROUND_TRIP_SECONDS.observe(time.perf_counter() - started)
        if error is not None:
            STORE_ERRORS.inc(REDIS_ERRORS)
        position = 0
        for count, future in batch.waiters:
            end = position + 3 * count
            if not future.done():  # a cancelled request (client gone) is skipped
                if error is not None:
                    future.set_exception(error)
                else:
                    future.set_result(reply[position:end])
            position = end

    async def peek(self, ops: Sequence[CounterOp], now: float) -> list[Usage]:
        """Current usage of these counters (each op's hits added hypothetically),
        without charging anything and without the local cache (admin inspection)."""
        deadline = self.link.deadline()
        algorithms = [algorithm_for(op.limit.algorithm) for op in ops]
        scripts = [a.script_op(op.key, op.limit, now)
                   for a, op in zip(algorithms, ops, strict=True)]
        counters = _Counters(ops, algorithms, scripts, [op.hits for op in ops],
                             [_PEEK] * len(ops))
        usages: list[Usage] = []
        for i, script in enumerate(scripts):
            try:
                reply = await self._submit(self.link.slot(script.keys[0]), counters, [i],
                                           deadline)
            except StoreUnavailable as exc:
                usages.append(uncounted(str(exc)))
                continue
            if reply[0] == b"E":
                usages.append(uncounted(f"redis refused counter {script.keys[0]!r}"))
            else:
                usages.append(algorithms[i].usage(reply, ops[i].hits, ops[i].limit, now))
        return usages

    async def delete(self, keys: Sequence[str]) -> int:
        """Delete these keys (admin reset) and forget them in the local cache."""
        for key in keys:
            self.local_cache.forget(key)
        return await self.link.delete(keys, self.link.deadline())

    async def ping(self) -> None:
        """StoreUnavailable (with Redis' reason) unless the deployment answers."""
        await self.link.ping(self.link.deadline())

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for queue in self._queues.values():
            if queue.timer is not None:
                queue.timer.cancel()
            if queue.batch is not None:
                for _, future in queue.batch.waiters:
                    if not future.done():
                        future.cancel()
        self._queues.clear()
        await self.link.aclose()


def _crossing_groups(
    send: list[int], groups: list[int], names: list[str], slots: dict[int, int]
) -> set[int]:
    """Groups under the stop rule whose counters are in more than one slot."""
    seen: dict[int, int] = {}
    crossing: set[int] = set()
    for i in send:
        if names[i] == _ALONE:
            continue
        first = seen.setdefault(groups[i], slots[i])
        if first != slots[i]:
            crossing.add(groups[i])
    return crossing


def connect_single(url: str, options: RedisOptions) -> SingleLink:
    """A link for `redis://`, `rediss://` or `unix://` URLs (connects on first use)."""
    endpoint = parse_redis_url(url, tls_ca_file=options.tls_ca_file)
    return SingleLink(RespConnection(endpoint, timeout=options.timeout))
