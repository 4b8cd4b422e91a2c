"""GCRA (generic cell rate algorithm): a leaky bucket with no background work.

State is `(fill, last_ms)`: `fill` counts hits in units of window-milliseconds (a hit
adds `window_ms`), and the bucket drains `limit` units per millisecond, so a full
bucket of `limit` hits empties in one window. A request fits when
`fill + hits * window_ms <= limit * window_ms`. Rejected hits are not added (unlike
the fixed window), so a client that backs off recovers at the steady rate.
All arithmetic is on integers below 2^53, so Redis' Lua doubles give the same result.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ratelimit_service.algorithms.base import EXACT, MemoryCells, ScriptOp, now_ms
from ratelimit_service.models import Limit, Usage


@dataclass(frozen=True, slots=True)
class State:
    fill: int
    last_ms: int


EMPTY = State(0, 0)


def step(state: State, at_ms: int, hits: int, limit: Limit) -> tuple[State, Usage]:
    """Apply `hits` at `at_ms`; returns the new state and the usage around it."""
    window_ms = limit.unit.seconds * 1000
    elapsed = max(0, at_ms - state.last_ms)
    fill = max(0, state.fill - elapsed * limit.requests_per_unit)
    before = -(-fill // window_ms)
    wanted = fill + hits * window_ms
    if wanted <= limit.requests_per_unit * window_ms:
        fill = wanted
    return State(fill, at_ms), Usage(before, before + hits, drain_seconds(fill, limit))


def drain_seconds(fill: int, limit: Limit) -> int:
    """Seconds until the bucket is empty (the limit fully available again)."""
    if fill <= 0:
        return 0
    rate = max(1, limit.requests_per_unit)
    return -(-fill // (rate * 1000))


def expiry_ms(state: State, limit: Limit) -> int:
    """How long the state must be kept: until it would have drained to zero."""
    rate = max(1, limit.requests_per_unit)
    return max(1000, -(-state.fill // rate) + 1000)


class Gcra:
    name = "gcra"
    takes_burst = False
    # p1: now_ms, p2: rate (requests_per_unit), p3: window_ms. State: hash {f, t}.
    lua = """function(k1, k2, hits, cap, commit, now, rate, window)
  local state = redis.call('HMGET', k1, 'f', 't')
  local fill = tonumber(state[1]) or 0
  local last = tonumber(state[2]) or now
  local elapsed = now - last
  if elapsed < 0 then elapsed = 0 end
  fill = fill - elapsed * rate
  if fill < 0 then fill = 0 end
  local before = math.ceil(fill / window)
  local wanted = fill + hits * window
  if wanted <= rate * window then fill = wanted end
  if commit then
    redis.call('HSET', k1, 'f', string.format('%.0f', fill), 't', string.format('%.0f', now))
    redis.call('PEXPIRE', k1, math.ceil(fill / math.max(rate, 1)) + 1000)
  end
  return {before, before + hits, string.format('%.0f', fill)}
end"""

    def check(self, limit: Limit) -> str | None:
        if limit.requests_per_unit * limit.unit.seconds * 1000 >= EXACT:
            return (
                "gcra needs requests_per_unit x unit in milliseconds below 2^53; "
                "use fixed_window for this limit"
            )
        return None

    def keys(self, base: str, limit: Limit, now: float) -> tuple[str, ...]:
        return (f"{base}gcra",)

    def step(
        self, cells: MemoryCells, base: str, hits: int, limit: Limit, now: float, *, commit: bool
    ) -> Usage:
        key = f"{base}gcra"
        found = cells.state(key, now)
        state = State(*found) if found is not None else EMPTY
        new_state, usage = step(state, now_ms(now), hits, limit)
        if commit:
            until = now + expiry_ms(new_state, limit) / 1000
            cells.set_state(key, (new_state.fill, new_state.last_ms), until)
        return usage

    def script_op(self, base: str, limit: Limit, now: float) -> ScriptOp:
        key = f"{base}gcra"
        return ScriptOp((key, key), (now_ms(now), limit.requests_per_unit,
                                     limit.unit.seconds * 1000))

    def usage(self, reply: Sequence[Any], hits: int, limit: Limit, now: float) -> Usage:
        return Usage(int(reply[0]), int(reply[1]), drain_seconds(int(reply[2]), limit))

    def over_until(
        self, reply: Sequence[Any], usage: Usage, limit: Limit, now: float
    ) -> float | None:
        # Room for one more hit once fill + window <= rate * window.
        rate = max(1, limit.requests_per_unit)
        window_ms = limit.unit.seconds * 1000
        wait_ms = max(0, int(reply[2]) + window_ms - limit.requests_per_unit * window_ms) / rate
        return now + wait_ms / 1000


GCRA = Gcra()
