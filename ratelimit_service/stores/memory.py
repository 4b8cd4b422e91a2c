"""In-memory counters for a single replica: bounded, expiring, exact under asyncio.

`apply` never awaits (it returns without suspending), so all operations of one
request run without interleaving on the event loop: counts are exact however many
requests are in flight, and a caller driving the coroutine by hand finishes it in
one `send`.

The store only runs operations: each counter's algorithm steps its own state through
the `MemoryCells` methods here. Window counters live in one dict per expiry time (a
window's end): a key costs one dict slot plus its string, and a whole window expires
by dropping its dict. States whose expiry moves with every hit (GCRA, token bucket)
sit in an LRU of their own. Both are bounded by a number of keys and by a byte
budget (an estimate per key: its string plus the containers' overhead); when either
is reached the store drops keys from the window closest to expiring, then the
least recently used states, which can only under-count.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from ratelimit_service import charging
from ratelimit_service.algorithms import algorithm_for
from ratelimit_service.models import CounterOp, Usage

# Bytes of a window counter beyond its key's characters: the str header, the dict
# slot (entry + index, at the dicts' usual fill) and the count. Measured with
# tracemalloc in tests/reliability/test_ratelimit_memory.py.
COUNTER_OVERHEAD = 110
# A state: the LRU's linked entry, a tuple of two ints and the expiry float.
STATE_OVERHEAD = 340
DEFAULT_MAX_BYTES = 64 * 1024 * 1024


def _counter_cost(key: str) -> int:
    return COUNTER_OVERHEAD + len(key)


def _state_cost(key: str) -> int:
    return STATE_OVERHEAD + len(key)


class MemoryStore:
    """A CounterStore in this process's memory."""

    def __init__(
        self,
        max_keys: int = 1_000_000,
        *,
        stop_when_over: bool = False,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        if max_keys < 1:
            raise ValueError("max_keys must be at least 1")
        if max_bytes < 1:
            raise ValueError("max_bytes must be at least 1")
        self.max_keys = max_keys
        self.max_bytes = max_bytes
        self.stop_when_over = stop_when_over  # STOP_CACHE_KEY_INCREMENT_WHEN_OVERLIMIT
        self.bytes = 0  # estimated bytes held by counters and states
        self.evicted = 0
        self._windows: dict[int, dict[str, int]] = {}  # expiry -> counters
        self._counters = 0
        self._next_expiry = 0
        self._states: OrderedDict[str, tuple[tuple[int, int], float]] = OrderedDict()

    def __len__(self) -> int:
        return self._counters + len(self._states)

    async def apply(self, ops: Sequence[CounterOp], now: float) -> list[Usage]:
        return self.apply_now(ops, now)

    def apply_now(self, ops: Sequence[CounterOp], now: float) -> list[Usage]:
        """The synchronous core of apply (also used by tests and benchmarks)."""
        if self._windows and now >= self._next_expiry:
            self._expire(now)
        if len(ops) == 1:  # the common case: no group to charge by (charging.grouped)
            op = ops[0]
            return [algorithm_for(op.limit.algorithm).step(self, op.key, op.hits, op.limit, now,
                                                           commit=True)]
        hits = [op.hits for op in ops]
        groups = charging.groups_of(ops, stop_when_over=self.stop_when_over)
        many = charging.grouped(groups)
        if many:
            over = [
                g in many
                and algorithm_for(op.limit.algorithm)
                .step(self, op.key, op.hits, op.limit, now, commit=False)
                .after > op.limit.capacity
                for op, g in zip(ops, groups, strict=True)
            ]
            hits = charging.charges(hits, groups, over)
        return [
            algorithm_for(op.limit.algorithm).step(self, op.key, h, op.limit, now, commit=True)
            for op, h in zip(ops, hits, strict=True)
        ]

    async def peek(self, ops: Sequence[CounterOp], now: float) -> list[Usage]:
        """Each counter's usage with its op's hits added hypothetically; nothing written."""
        return [
            algorithm_for(op.limit.algorithm).step(self, op.key, op.hits, op.limit, now,
                                                   commit=False)
            for op in ops
        ]

    async def delete(self, keys: Sequence[str]) -> int:
        """Forget these counters and states (admin reset); how many existed."""
        found = 0
        for key in keys:
            for expires, window in list(self._windows.items()):
                if window.pop(key, None) is not None:
                    found += 1
                    self._counters -= 1
                    self.bytes -= _counter_cost(key)
                    if not window:
                        del self._windows[expires]
            if self._states.pop(key, None) is not None:
                found += 1
                self.bytes -= _state_cost(key)
        self._next_expiry = min(self._windows, default=0)
        return found

    async def ping(self) -> None:
        """Always answers: the memory store is always ready."""

    async def close(self) -> None:
        self._windows.clear()
        self._states.clear()
        self._counters = 0
        self.bytes = 0

    # MemoryCells: what the algorithms read and write.

    def count(self, key: str, expires: int) -> int:
        window = self._windows.get(expires)
        return window.get(key, 0) if window is not None else 0

    def add(self, key: str, hits: int, expires: int) -> int:
        window = self._windows.get(expires)
        if window is not None:
            count = window.get(key)
            if count is not None:  # a counter of this window: one lookup, one store
                count += hits
                window[key] = count
                return count
        if hits == 0:
            return 0  # a check-only request never creates a counter
        cost = _counter_cost(key)
        self._make_room(cost)
        window = self._windows.get(expires)
        if window is None:
            window = self._windows[expires] = {}
            if len(self._windows) == 1 or expires < self._next_expiry:
                self._next_expiry = expires
        self._counters += 1
        self.bytes += cost
        window[key] = hits
        return hits

    def state(self, key: str, now: float) -> tuple[int, int] | None:
        found = self._states.get(key)
        if found is None or found[1] <= now:
            return None
        return found[0]

    def set_state(self, key: str, state: tuple[int, int], until: float) -> None:
        if key not in self._states:
            cost = _state_cost(key)
            self._make_room(cost)
            self.bytes += cost
        self._states[key] = (state, until)
        self._states.move_to_end(key)

    def _make_room(self, cost: int) -> None:
        while self and (len(self) >= self.max_keys or self.bytes + cost > self.max_bytes):
            self._evict_one()

    def _expire(self, now: float) -> None:
        for expires in [e for e in self._windows if e <= now]:
            window = self._windows.pop(expires)
            self._counters -= len(window)
            self.bytes -= sum(_counter_cost(key) for key in window)
        self._next_expiry = min(self._windows, default=0)
        # A few states from the cold end of their LRU per sweep.
        for _ in range(8):
            if not self._states:
                break
            key, (_, until) = next(iter(self._states.items()))
            if until > now:
                break
            del self._states[key]
            self.bytes -= _state_cost(key)

    def _evict_one(self) -> None:
        self.evicted += 1
        if self._windows:
            soonest = min(self._windows)
            window = self._windows[soonest]
            key = next(iter(window))
            del window[key]
            self._counters -= 1
            self.bytes -= _counter_cost(key)
            if not window:
                del self._windows[soonest]
                self._next_expiry = min(self._windows, default=0)
        elif self._states:
            key, _ = self._states.popitem(last=False)
            self.bytes -= _state_cost(key)
