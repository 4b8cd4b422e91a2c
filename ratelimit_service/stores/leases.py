"""Leased counting: a replica reserves a fixed-window counter's hits in blocks (opt-in).

Without leases every request that counts on Redis pays one round trip, and with
few requests in flight together (one Envoy worker, a quiet service) nothing shares
it: on a two-core VM that trip costs the service ~100 µs of CPU, most of it the
kernel waking the other side (bench/limit_store_cost.py). A lease spends one trip
on a block of hits instead: the reply says what the counter held before the block,
so the replica knows how much of the block is under the limit and grants those
hits locally until they are used up or the window ends.

What it keeps and what it gives up:
- **Never more than the limit.** A block is taken by INCRBY in Redis before any
  of its hits is granted, and only the part under the limit is granted, so every
  replica together allows at most the limit in a window, exactly as without leases.
- **One replica answers as exact counting does** while the limit is more than a
  block away; nearer, it may refuse up to a block early (a request counted directly
  treats the hits it holds reserved as used), and its remaining hits are within a
  block of exact counting's (tests/ratelimit/test_leases.py compares the two).
- **Earlier denials with several replicas.** Hits a replica reserved but did not
  use in a window are lost to the others: near the limit, another replica may be
  refused while this one still holds up to a block. A block is at most
  `lease_hits` and at most a tenth of the limit, so with R replicas at most
  (R - 1) blocks of a window go unused.
- **The counter in Redis runs ahead** of the hits granted by up to a block per
  replica (what `peek` and the admin API read), and a block that crosses the
  limit leaves the counter over it, which the reference does too for refused hits.
- Only fixed-window limits of one descriptor lease (`fixed_window`, a counter of
  its own: no stop-increment group); the other algorithms and grouped counters
  take their round trip as before. A block smaller than two requests' hits is not
  worth one: that counter is counted directly.

One block per counter is on its way at a time: a check that would ask for another
waits for it (the round trip it would have paid) and is served from it, so a burst
of concurrent checks does not reserve a block each. A lease taken before a reload
lowered the limit grants no more than the new limit.

The lease table is bounded; an evicted or expired lease only loses its unused hits
(fewer allowed, never more).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from ratelimit_service.algorithms.base import reset_seconds, window_start
from ratelimit_service.algorithms.fixed_window import FIXED_WINDOW, counter_key
from ratelimit_service.models import CounterOp, Usage
from ratelimit_service.stores.redis import RedisStore

# A lease is a few numbers; 100k of them are ~15 MB at most, far more than the
# distinct descriptors a replica sees busy in one window.
MAX_LEASES = 100_000
_SHARE = 10  # a block is at most 1/_SHARE of the limit


@dataclass(slots=True)
class _Lease:
    left: int  # hits reserved in Redis and not granted yet
    top: int  # the counter as this replica accounts it, reserved hits included
    until: float  # the window's end (Unix seconds)


class LeasedStore:
    """A CounterStore that leases fixed-window hits from `inner` (a RedisStore)."""

    def __init__(self, inner: RedisStore, lease_hits: int, *,
                 max_leases: int = MAX_LEASES) -> None:
        self.inner = inner
        self.lease_hits = lease_hits
        self.max_leases = max_leases
        self._leases: dict[str, _Lease] = {}
        self._asking: dict[str, asyncio.Future[None]] = {}  # counters with a block on its way
        self.granted_locally = 0  # hits answered from a lease, with no round trip

    @property
    def calls_sent(self) -> int:
        return self.inner.calls_sent  # for bench/

    def __len__(self) -> int:
        return len(self._leases)

    def _block(self, op: CounterOp) -> int:
        """Hits to reserve for `op`; op.hits when a block is not worth it."""
        block = min(self.lease_hits, op.limit.capacity // _SHARE)
        return block if block >= 2 * op.hits else op.hits

    def _leasable(self, op: CounterOp, now: float) -> str:
        """The counter key `op` may lease under, or '' when it is counted directly."""
        limit = op.limit
        if limit.algorithm != FIXED_WINDOW.name or op.group != -1 or op.hits < 1:
            return ""
        return counter_key(op.key, window_start(now, limit.unit.seconds))

    def _lease(self, key: str, now: float) -> _Lease | None:
        lease = self._leases.get(key)
        if lease is not None and lease.until <= now:
            del self._leases[key]
            return None
        return lease

    def apply_now(self, ops: Sequence[CounterOp], now: float) -> list[Usage] | None:
        """Every op granted from its lease, without I/O; None (nothing taken) unless
        each one can be: `apply` then."""
        leases: list[_Lease] = []
        for op in ops:
            key = self._leasable(op, now)
            lease = self._lease(key, now) if key else None
            if lease is None or not _grants(lease, op):
                return None
            if leases and any(lease is held for held in leases):
                return None  # one counter twice: `apply` takes them in turn
            leases.append(lease)
        if len(ops) == 1:
            return [self._local(leases[0], ops[0], now)]
        return [self._local(lease, op, now) for lease, op in zip(leases, ops, strict=True)]

    def _local(self, lease: _Lease, op: CounterOp, now: float) -> Usage:
        """Grant `op` from its lease with no round trip."""
        self.granted_locally += op.hits
        return _take(lease, op, reset_seconds(now, op.limit.seconds))

    async def apply(self, ops: Sequence[CounterOp], now: float) -> list[Usage]:
        keys = [self._leasable(op, now) for op in ops]
        # One reservation per counter at a time: a check that would ask for a block while
        # another is on its way waits for it (one round trip, as it would pay anyway) and
        # is then served from it, so concurrent checks never hoard blocks.
        while self._asking:
            waiting = next((self._asking[key] for op, key in zip(ops, keys, strict=True)
                            if key in self._asking and not self._holds(key, op, now)), None)
            if waiting is None:
                break
            await asyncio.shield(waiting)
        usages: list[Usage | None] = [None] * len(ops)
        asks: list[tuple[int, CounterOp, str]] = []  # (index, op sent, lease key or '')
        for i, (op, key) in enumerate(zip(ops, keys, strict=True)):
            if not key:
                asks.append((i, op, ""))
                continue
            lease = self._lease(key, now)
            if lease is not None and _grants(lease, op):
                usages[i] = self._local(lease, op, now)
                continue
            # Past the limit (a refusal counted, or a reload lowered it): count directly.
            spent = lease is not None and lease.top > op.limit.capacity
            block = op.hits if spent else self._block(op)
            if block == op.hits:
                asks.append((i, op, key))  # counted directly, on a counter that may lease
            else:
                asks.append((i, CounterOp(op.key, block, op.limit, op.group), key))
        if not asks:
            return [u for u in usages if u is not None]
        asking = [key for i, sent, key in asks
                  if key and sent is not ops[i] and key not in self._asking]
        done = asyncio.get_running_loop().create_future()
        for key in asking:
            self._asking[key] = done
        try:
            replies = await self.inner.apply([sent for _, sent, _ in asks], now)
            for (i, sent, key), usage in zip(asks, replies, strict=True):
                if not key or usage.error:
                    usages[i] = usage
                elif sent is ops[i]:
                    usages[i] = self._counted(key, usage)
                else:
                    usages[i] = self._reserved(key, ops[i], sent.hits, usage, now)
        finally:
            for key in asking:
                del self._asking[key]
            done.set_result(None)
        return [u for u in usages if u is not None]

    def _holds(self, key: str, op: CounterOp, now: float) -> bool:
        lease = self._lease(key, now)
        return lease is not None and _grants(lease, op)

    def _counted(self, key: str, usage: Usage) -> Usage:
        """A hit counted directly on a counter this replica also leases: its account
        follows the counter (the answer is Redis', reserved hits counted as used)."""
        lease = self._leases.get(key)
        if lease is not None and not usage.from_local_cache:
            lease.top = max(lease.top, usage.after)
        return usage

    def _reserved(self, key: str, op: CounterOp, block: int, usage: Usage,
                  now: float) -> Usage:
        """Grant `op` from a block just reserved (usage.before: the counter before it)."""
        capacity = op.limit.capacity
        seconds = op.limit.unit.seconds
        before = usage.before
        granted = max(0, min(block, capacity - before))  # the block's part under the limit
        lease = self._leases.get(key)
        if lease is None:
            if len(self._leases) >= self.max_leases:
                del self._leases[next(iter(self._leases))]  # the oldest: its window is likely over
            lease = self._leases[key] = _Lease(0, 0, window_start(now, seconds) + seconds)
        if granted:  # a block refused whole (the limit reached) leaves the account as it was
            lease.top = max(lease.top, before + granted)
            lease.left += granted
        if _grants(lease, op):
            return _take(lease, op, usage.reset_seconds)
        # Refused: counted from this replica's account, as exact counting would see it
        # alone (the counter in Redis holds unused reservations too), and over the limit.
        # Refused hits count, as in the reference: the account passes the limit, so the
        # lease grants no more in this window and later hits are counted directly.
        after = max(lease.top - lease.left + op.hits, capacity + 1)
        lease.top = after + lease.left
        return Usage(after - op.hits, after, usage.reset_seconds,
                     from_local_cache=usage.from_local_cache)

    async def peek(self, ops: Sequence[CounterOp], now: float) -> list[Usage]:
        return await self.inner.peek(ops, now)

    async def delete(self, keys: Sequence[str]) -> int:
        """Delete these counters (admin reset) and drop their leases."""
        for key in keys:
            self._leases.pop(key, None)
        return await self.inner.delete(keys)

    async def ping(self) -> None:
        await self.inner.ping()

    async def close(self) -> None:
        self._leases.clear()
        await self.inner.close()


def _grants(lease: _Lease, op: CounterOp) -> bool:
    """Whether `lease` can grant `op`, under today's limit (a lease taken before a
    reload that lowered it grants no more than the new one)."""
    return lease.left >= op.hits and lease.top - lease.left + op.hits <= op.limit.capacity


def _take(lease: _Lease, op: CounterOp, reset: int) -> Usage:
    """Take `op`'s hits from `lease` (which `_grants` them); the Usage as accounted."""
    lease.left -= op.hits
    after = lease.top - lease.left
    return Usage(after - op.hits, after, reset)
