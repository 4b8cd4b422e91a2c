"""What a counting algorithm is: one object that owns everything about how it counts.

An algorithm names its counter keys, steps its state in memory, supplies its Lua
operation (run inside the one request script the Redis stores send), turns that
operation's reply into a `Usage`, and says until when a key found over its limit is
known to stay over (the Redis stores' local over-limit cache). Stores only run
operations; `decision` only compares `Usage.after` with `Limit.capacity`.

Adding an algorithm is one module with one such object plus one line in
`ratelimit_service.algorithms.REGISTRY`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ratelimit_service.models import Limit, Usage

# Lua numbers are doubles: every value an algorithm keeps in Redis must be an integer
# below 2^53 to stay exact, so its memory step and its Lua operation agree.
EXACT = 2**53


class MemoryCells(Protocol):
    """The in-memory store's state, as an algorithm reads and writes it.

    Window counters expire at a time known in advance (`expires`, Unix seconds);
    states (a pair of integers) expire at a time that moves with every hit.
    """

    def count(self, key: str, expires: int) -> int: ...

    def add(self, key: str, hits: int, expires: int) -> int: ...

    def state(self, key: str, now: float) -> tuple[int, int] | None: ...

    def set_state(self, key: str, state: tuple[int, int], until: float) -> None: ...


@dataclass(frozen=True, slots=True)
class ScriptOp:
    """One operation of the request script: two keys (the same one twice when the
    algorithm needs one) and three integer parameters for the algorithm's Lua function."""

    keys: tuple[str, str]
    params: tuple[int, int, int]


class CountingAlgorithm(Protocol):
    """One counting algorithm (see the module docstring)."""

    @property
    def name(self) -> str:
        """The `rate_limit.algorithm` value that selects it."""
        ...

    @property
    def takes_burst(self) -> bool:
        """Whether `rate_limit.burst` means something to it."""
        ...

    @property
    def lua(self) -> str:
        """`function(k1, k2, hits, cap, commit, p1, p2, p3) ... return {before, after, extra} end`.

        With `commit` false it only computes the answer (the stop-increment rule asks
        first); it must not write.
        """
        ...

    def check(self, limit: Limit) -> str | None:
        """Why this limit cannot be counted by this algorithm (a config error), or None."""
        ...

    def keys(self, base: str, limit: Limit, now: float) -> tuple[str, ...]:
        """Every key holding this counter's state at `now` (a reset deletes them)."""
        ...

    def step(
        self, cells: MemoryCells, base: str, hits: int, limit: Limit, now: float, *, commit: bool
    ) -> Usage:
        """The in-memory step; with `commit` false, the answer without changing state."""
        ...

    def script_op(self, base: str, limit: Limit, now: float) -> ScriptOp:
        """The keys and parameters of this counter's Lua operation at `now`."""
        ...

    def usage(self, reply: Sequence[Any], hits: int, limit: Limit, now: float) -> Usage:
        """The Usage from the Lua operation's three reply values."""
        ...

    def over_until(
        self, reply: Sequence[Any], usage: Usage, limit: Limit, now: float
    ) -> float | None:
        """Until when a counter the script found over its limit stays over for any
        request (None: it may come back under before anyone can tell; do not cache)."""
        ...


def window_start(now: float, seconds: int) -> int:
    """Windows are aligned to Unix time, so every replica agrees on them."""
    return int(now) // seconds * seconds


def reset_seconds(now: float, seconds: int) -> int:
    return seconds - int(now) % seconds


def now_ms(now: float) -> int:
    return round(now * 1000)


def slot_safe(base: str) -> str:
    """`base` with a Redis Cluster hash tag, so several keys derived from it share a slot.

    Stacked windows already come tagged (`{...}`); a reference single-window key
    keeps its name (a fixed window has one key per window and needs no tag).
    """
    start = base.find("{")
    if start >= 0:
        end = base.find("}", start + 1)
        if end > start + 1:
            return base
    return "{" + base + "}"
