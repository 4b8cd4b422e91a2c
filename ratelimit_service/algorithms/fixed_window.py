"""Fixed window, as the reference counts: one counter per (descriptor, window start).

Window starts are `now // unit * unit` in Unix seconds, so every replica agrees on
them and a key expires with its window. Keys are the reference's:
`prefix + domain_key_value_..._` + window start. Rejected hits still count.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ratelimit_service.algorithms.base import (
    MemoryCells,
    ScriptOp,
    reset_seconds,
    window_start,
)
from ratelimit_service.models import Limit, Unit, Usage
from tollgate.memo import KeptText


def window_key(base: str, now: float, unit: Unit) -> str:
    """The reference's cache key: `prefix + domain_key_value_..._` + window start."""
    return counter_key(base, window_start(now, unit.seconds))


# (base, window start) -> key: a busy counter's key is formatted once per window, not
# per hit (bounded by characters: a descriptor value may be long and client-chosen).
KEYS = KeptText(256 * 1024)


def counter_key(base: str, start: int) -> str:
    """`base` + the window start: one counter per (descriptor, window)."""
    key = KEYS.entries.get((base, start))
    if key is None:
        key = f"{base}{start}"
        KEYS.put((base, start), key, len(base) + len(key))
    return key


class FixedWindow:
    name = "fixed_window"
    takes_burst = False
    # p1: seconds the key lives (the window)
    lua = """function(k1, k2, hits, cap, commit, ttl, _p2, _p3)
  if not commit then
    local count = tonumber(redis.call('GET', k1) or '0')
    return {count, count + hits, 0}
  end
  local count = redis.call('INCRBY', k1, hits)
  if count == hits then redis.call('EXPIRE', k1, ttl) end
  return {count - hits, count, 0}
end"""

    def check(self, limit: Limit) -> str | None:
        return None

    def keys(self, base: str, limit: Limit, now: float) -> tuple[str, ...]:
        return (window_key(base, now, limit.unit),)

    def step(
        self, cells: MemoryCells, base: str, hits: int, limit: Limit, now: float, *, commit: bool
    ) -> Usage:
        seconds = limit.seconds
        start = window_start(now, seconds)
        key = counter_key(base, start)
        if commit:
            after = cells.add(key, hits, start + seconds)
        else:
            after = cells.count(key, start + seconds) + hits
        return Usage(after - hits, after, reset_seconds(now, seconds))

    def script_op(self, base: str, limit: Limit, now: float) -> ScriptOp:
        key = window_key(base, now, limit.unit)
        return ScriptOp((key, key), (limit.unit.seconds, 0, 0))

    def usage(self, reply: Sequence[Any], hits: int, limit: Limit, now: float) -> Usage:
        return Usage(int(reply[0]), int(reply[1]), reset_seconds(now, limit.unit.seconds))

    def over_until(
        self, reply: Sequence[Any], usage: Usage, limit: Limit, now: float
    ) -> float | None:
        # A window's count only grows: over now means over until the window ends.
        return float(window_start(now, limit.unit.seconds) + limit.unit.seconds)


FIXED_WINDOW = FixedWindow()
