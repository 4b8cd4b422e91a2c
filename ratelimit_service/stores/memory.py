"""In-memory counters for a single replica: bounded, expiring, exact under asyncio.

`apply` never awaits, so all operations of one request run without interleaving on
the event loop: counts are exact however many requests are in flight.

Window counters live in one dict per expiry time (a window's end, or two windows
for the sliding window's current counter): a key costs one dict slot plus its
string, and a whole window expires by dropping its dict. When `max_keys` is reached
the store drops keys from the window closest to expiring (the least useful ones),
which can only under-count. GCRA states, whose expiry moves with every hit, sit in
a small LRU of their own.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from ratelimit_service.algorithms import fixed_window, gcra, sliding_window
from ratelimit_service.model import Algorithm, CounterOp, Usage


class MemoryStore:
    """A CounterStore in this process's memory."""

    def __init__(self, max_keys: int = 1_000_000, *, stop_when_over: bool = False) -> None:
        if max_keys < 1:
            raise ValueError("max_keys must be at least 1")
        self.max_keys = max_keys
        self.stop_when_over = stop_when_over  # STOP_CACHE_KEY_INCREMENT_WHEN_OVERLIMIT
        self._windows: dict[int, dict[str, int]] = {}  # expiry -> counters
        self._counters = 0
        self._next_expiry = 0
        self._gcra: OrderedDict[str, tuple[gcra.State, float]] = OrderedDict()

    def __len__(self) -> int:
        return self._counters + len(self._gcra)

    async def apply(self, ops: Sequence[CounterOp], now: float) -> list[Usage]:
        return self.apply_now(ops, now)

    def apply_now(self, ops: Sequence[CounterOp], now: float) -> list[Usage]:
        """The synchronous core of apply (also used by tests and benchmarks)."""
        if self._windows and now >= self._next_expiry:
            self._expire(now)
        if self.stop_when_over:
            return self._apply_stopping(ops, now)
        return [self._apply_one(op, now) for op in ops]

    def _apply_stopping(self, ops: Sequence[CounterOp], now: float) -> list[Usage]:
        fixed = [i for i, op in enumerate(ops) if op.limit.algorithm is Algorithm.FIXED_WINDOW]
        keys, current = [], []
        for i in fixed:
            start = fixed_window.window_start(now, ops[i].limit.unit)
            keys.append((f"{ops[i].key}{start}", start + ops[i].limit.unit.seconds))
            current.append(self._windows.get(keys[-1][1], {}).get(keys[-1][0], 0))
        charge = fixed_window.charged_hits(
            current, [ops[i].hits for i in fixed],
            [ops[i].limit.requests_per_unit for i in fixed], cached_over=False,
        )
        usages = [self._apply_one(op, now) if op.limit.algorithm is not Algorithm.FIXED_WINDOW
                  else None for op in ops]
        for i, (key, expires), add in zip(fixed, keys, charge, strict=True):
            after = self._incr(key, add, now, expires)
            usages[i] = fixed_window.usage(after, ops[i].hits, now, ops[i].limit.unit)
        return [u for u in usages if u is not None]

    async def close(self) -> None:
        self._windows.clear()
        self._gcra.clear()
        self._counters = 0

    def _apply_one(self, op: CounterOp, now: float) -> Usage:
        unit = op.limit.unit
        if op.limit.algorithm is Algorithm.GCRA:
            return self._gcra_step(op, now)
        start = fixed_window.window_start(now, unit)
        if op.limit.algorithm is Algorithm.SLIDING_WINDOW:
            current, previous = sliding_window.keys(op.key, now, unit)
            after = self._incr(current, op.hits, now, start + 2 * unit.seconds)
            # The previous window's counter was kept until the end of this window.
            prev = self._windows.get(start + unit.seconds, {}).get(previous, 0)
            return sliding_window.usage(after, prev, op.hits, now, unit)
        after = self._incr(f"{op.key}{start}", op.hits, now, start + unit.seconds)
        return fixed_window.usage(after, op.hits, now, unit)

    def _incr(self, key: str, hits: int, now: float, expires: int) -> int:
        window = self._windows.get(expires)
        if window is not None and key in window:
            count = window[key] + hits
            window[key] = count
            return count
        if len(self) >= self.max_keys:
            self._evict_one()
            window = self._windows.get(expires)
        if window is None:
            window = self._windows[expires] = {}
            if len(self._windows) == 1 or expires < self._next_expiry:
                self._next_expiry = expires
        self._counters += 1
        window[key] = hits
        return hits

    def _gcra_step(self, op: CounterOp, now: float) -> Usage:
        now_ms = round(now * 1000)
        found = self._gcra.get(op.key)
        state = found[0] if found is not None and found[1] > now else gcra.EMPTY
        if found is None and len(self) >= self.max_keys:
            self._evict_one()
        new_state, usage = gcra.step(state, now_ms, op.hits, op.limit)
        self._gcra[op.key] = (new_state, now + gcra.expiry_ms(new_state, op.limit) / 1000)
        self._gcra.move_to_end(op.key)
        return usage

    def _expire(self, now: float) -> None:
        for expires in [e for e in self._windows if e <= now]:
            self._counters -= len(self._windows.pop(expires))
        self._next_expiry = min(self._windows, default=0)
        # A few GCRA states from the cold end of their LRU per sweep.
        for _ in range(8):
            if not self._gcra:
                break
            key, (_, until) = next(iter(self._gcra.items()))
            if until > now:
                break
            del self._gcra[key]

    def _evict_one(self) -> None:
        if self._windows:
            soonest = min(self._windows)
            window = self._windows[soonest]
            del window[next(iter(window))]
            self._counters -= 1
            if not window:
                del self._windows[soonest]
                self._next_expiry = min(self._windows, default=0)
        elif self._gcra:
            self._gcra.popitem(last=False)
