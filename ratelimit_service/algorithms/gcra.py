"""GCRA (generic cell rate algorithm): a leaky bucket with no background work.

State is `(fill, last_ms)`: `fill` counts hits in units of window-milliseconds (a hit
adds `window_ms`), and the bucket drains `limit` units per millisecond, so a full
bucket of `limit` hits empties in one window. A request fits when
`fill + hits * window_ms <= limit * window_ms`. Rejected hits are not added (unlike
the fixed window), so a client that backs off recovers at the steady rate.
All arithmetic is on integers below 2^53, so Redis' Lua doubles give the same result.
"""

from __future__ import annotations

from dataclasses import dataclass

from ratelimit_service.model import Limit, Usage


@dataclass(frozen=True, slots=True)
class State:
    fill: int
    last_ms: int


EMPTY = State(0, 0)


def step(state: State, now_ms: int, hits: int, limit: Limit) -> tuple[State, Usage]:
    """Apply `hits` at `now_ms`; returns the new state and the usage around it."""
    window_ms = limit.unit.seconds * 1000
    elapsed = max(0, now_ms - state.last_ms)
    fill = max(0, state.fill - elapsed * limit.requests_per_unit)
    before = -(-fill // window_ms)
    wanted = fill + hits * window_ms
    if wanted <= limit.requests_per_unit * window_ms:
        fill = wanted
    return State(fill, now_ms), Usage(before, before + hits, drain_seconds(fill, limit))


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
