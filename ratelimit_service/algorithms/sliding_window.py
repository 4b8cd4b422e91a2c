"""Sliding window (two-window estimate): smoother than a fixed window at its edges.

One counter per window, each kept for two windows, and the previous window weighed
by how much of it still overlaps the sliding window:
`used = previous x remaining_ms // window_ms + current`. A client cannot send a full
limit at the end of one window and another at the start of the next. Rejected hits
count, as in the fixed window. The two keys share a Redis Cluster hash tag
(`{prefix domain_key_value_}start`), so one script reads both on any deployment.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ratelimit_service.algorithms.base import (
    MemoryCells,
    ScriptOp,
    now_ms,
    reset_seconds,
    slot_safe,
    window_start,
)
from ratelimit_service.models import Limit, Unit, Usage


def keys(base: str, now: float, unit: Unit) -> tuple[str, str]:
    """(current window key, previous window key)."""
    tagged = slot_safe(base)
    start = window_start(now, unit.seconds)
    return f"{tagged}{start}", f"{tagged}{start - unit.seconds}"


def remaining_ms(now: float, unit: Unit) -> int:
    """Milliseconds of the previous window still inside the sliding window."""
    window = unit.seconds * 1000
    elapsed = now_ms(now) - window_start(now, unit.seconds) * 1000
    return window - min(max(elapsed, 0), window)


def previous_weight(now: float, unit: Unit) -> float:
    return remaining_ms(now, unit) / (unit.seconds * 1000)


def carried(previous: int, now: float, unit: Unit) -> int:
    return previous * remaining_ms(now, unit) // (unit.seconds * 1000)


class SlidingWindow:
    name = "sliding_window"
    takes_burst = False
    # p1: seconds a key lives (two windows), p2: remaining_ms, p3: window_ms
    lua = """function(k1, k2, hits, cap, commit, ttl, remaining, window)
  local previous = tonumber(redis.call('GET', k2) or '0')
  local carried = math.floor(previous * remaining / window)
  local count
  if commit then
    count = redis.call('INCRBY', k1, hits)
    if count == hits then redis.call('EXPIRE', k1, ttl) end
    count = count - hits
  else
    count = tonumber(redis.call('GET', k1) or '0')
  end
  return {carried + count, carried + count + hits, 0}
end"""

    def check(self, limit: Limit) -> str | None:
        return None

    def keys(self, base: str, limit: Limit, now: float) -> tuple[str, ...]:
        return keys(base, now, limit.unit)

    def step(
        self, cells: MemoryCells, base: str, hits: int, limit: Limit, now: float, *, commit: bool
    ) -> Usage:
        unit = limit.unit
        current, previous = keys(base, now, unit)
        start = window_start(now, unit.seconds)
        # A window's counter is kept until the end of the next window.
        if commit:
            count = cells.add(current, hits, start + 2 * unit.seconds) - hits
        else:
            count = cells.count(current, start + 2 * unit.seconds)
        before = carried(cells.count(previous, start + unit.seconds), now, unit) + count
        return Usage(before, before + hits, reset_seconds(now, unit.seconds))

    def script_op(self, base: str, limit: Limit, now: float) -> ScriptOp:
        unit = limit.unit
        current, previous = keys(base, now, unit)
        return ScriptOp(
            (current, previous), (2 * unit.seconds, remaining_ms(now, unit), unit.seconds * 1000)
        )

    def usage(self, reply: Sequence[Any], hits: int, limit: Limit, now: float) -> Usage:
        return Usage(int(reply[0]), int(reply[1]), reset_seconds(now, limit.unit.seconds))

    def over_until(
        self, reply: Sequence[Any], usage: Usage, limit: Limit, now: float
    ) -> float | None:
        return None  # the previous window's weight decays: it may be under again soon


SLIDING_WINDOW = SlidingWindow()
