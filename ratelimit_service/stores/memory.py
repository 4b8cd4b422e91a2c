"""In-memory counters for a single replica: bounded, expiring, exact under asyncio.

`apply` never awaits, so all operations of one request run without interleaving on
the event loop: counts are exact however many requests are in flight. Entries expire
with their window; when `max_keys` is reached the least recently used entry goes
(which can only under-count a key nobody touched for the longest time).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from ratelimit_service.algorithms import fixed_window, gcra, sliding_window
from ratelimit_service.model import Algorithm, CounterOp, Usage

_Value = int | gcra.State


class MemoryStore:
    """A CounterStore in this process's memory."""

    def __init__(self, max_keys: int = 1_000_000) -> None:
        if max_keys < 1:
            raise ValueError("max_keys must be at least 1")
        self.max_keys = max_keys
        self._entries: OrderedDict[str, tuple[_Value, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    async def apply(self, ops: Sequence[CounterOp], now: float) -> list[Usage]:
        return self.apply_now(ops, now)

    def apply_now(self, ops: Sequence[CounterOp], now: float) -> list[Usage]:
        """The synchronous core of apply (also used by tests and benchmarks)."""
        self._expire_oldest(now)
        return [self._apply_one(op, now) for op in ops]

    async def close(self) -> None:
        self._entries.clear()

    def _apply_one(self, op: CounterOp, now: float) -> Usage:
        unit = op.limit.unit
        if op.limit.algorithm is Algorithm.GCRA:
            now_ms = round(now * 1000)
            state = self._get(op.key, now)
            if not isinstance(state, gcra.State):
                state = gcra.EMPTY
            new_state, usage = gcra.step(state, now_ms, op.hits, op.limit)
            self._set(op.key, new_state, now + gcra.expiry_ms(new_state, op.limit) / 1000)
            return usage
        if op.limit.algorithm is Algorithm.SLIDING_WINDOW:
            current, previous = sliding_window.keys(op.key, now, unit)
            start = fixed_window.window_start(now, unit)
            after = self._incr(current, op.hits, now, start + 2 * unit.seconds)
            prev = self._get(previous, now)
            prev_count = prev if isinstance(prev, int) else 0
            return sliding_window.usage(after, prev_count, op.hits, now, unit)
        key = fixed_window.window_key(op.key, now, unit)
        after = self._incr(key, op.hits, now, fixed_window.window_start(now, unit) + unit.seconds)
        return fixed_window.usage(after, op.hits, now, unit)

    def _incr(self, key: str, hits: int, now: float, expires: int) -> int:
        current = self._get(key, now)
        count = (current if isinstance(current, int) else 0) + hits
        self._set(key, count, expires)
        return count

    def _get(self, key: str, now: float) -> _Value | None:
        found = self._entries.get(key)
        if found is None:
            return None
        if found[1] <= now:
            del self._entries[key]
            return None
        return found[0]

    def _set(self, key: str, value: _Value, expires: float) -> None:
        entries = self._entries
        if key in entries:
            entries.move_to_end(key)
        elif len(entries) >= self.max_keys:
            entries.popitem(last=False)
        entries[key] = (value, expires)

    def _expire_oldest(self, now: float, budget: int = 8) -> None:
        # Amortized sweep: drop a few expired entries from the cold end per request.
        entries = self._entries
        for _ in range(budget):
            if not entries:
                return
            key, (_, expires) = next(iter(entries.items()))
            if expires > now:
                return
            del entries[key]
