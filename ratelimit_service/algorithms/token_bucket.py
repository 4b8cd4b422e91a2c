"""Token bucket, as Envoy's local_ratelimit users know it: `burst` tokens, refilled
at `requests_per_unit` per `unit`.

A fresh bucket is full, so it admits a burst of `burst` hits (default
`requests_per_unit`) and then the refill rate. Refill is continuous (Envoy refills
`tokens_per_fill` every `fill_interval`; the long-run rate is the same). A request
fits when the bucket holds its hits; rejected hits take nothing. State is
`(tokens, last_ms)` with tokens scaled by the window in milliseconds, so refilling
`requests_per_unit` per window is `requests_per_unit` scaled tokens per millisecond:
integer arithmetic below 2^53, the same in Python and in Redis' Lua.
`limit_remaining` is the whole tokens left, `duration_until_reset` the time until
the bucket is full again.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ratelimit_service.algorithms.base import EXACT, MemoryCells, ScriptOp, now_ms
from ratelimit_service.models import Limit, Usage


def step(
    state: tuple[int, int] | None, at_ms: int, hits: int, limit: Limit
) -> tuple[tuple[int, int], Usage]:
    """Take `hits` at `at_ms` if they fit; the new (tokens, last_ms) and the usage."""
    window = limit.unit.seconds * 1000
    full = limit.capacity * window
    rate = limit.requests_per_unit
    tokens, last = state if state is not None else (full, at_ms)
    tokens = min(full, tokens + max(0, at_ms - last) * rate)
    before = -(-(full - tokens) // window)
    if hits * window <= tokens:
        tokens -= hits * window
    return (tokens, at_ms), Usage(before, before + hits, _refill_seconds(full - tokens, rate))


def _refill_seconds(missing: int, rate: int) -> int:
    return -(-missing // (max(1, rate) * 1000))


class TokenBucket:
    name = "token_bucket"
    takes_burst = True
    # p1: now_ms, p2: rate (requests_per_unit), p3: window_ms; cap: burst. State: hash {k, t}.
    lua = """function(k1, k2, hits, cap, commit, now, rate, window)
  local state = redis.call('HMGET', k1, 'k', 't')
  local full = cap * window
  local tokens = tonumber(state[1]) or full
  local last = tonumber(state[2]) or now
  local elapsed = now - last
  if elapsed < 0 then elapsed = 0 end
  tokens = math.min(full, tokens + elapsed * rate)
  local before = math.ceil((full - tokens) / window)
  if hits * window <= tokens then tokens = tokens - hits * window end
  if commit then
    redis.call('HSET', k1, 'k', string.format('%.0f', tokens), 't', string.format('%.0f', now))
    redis.call('PEXPIRE', k1, math.ceil((full - tokens) / math.max(rate, 1)) + 1000)
  end
  return {before, before + hits, string.format('%.0f', tokens)}
end"""

    def check(self, limit: Limit) -> str | None:
        window = limit.unit.seconds * 1000
        if max(limit.capacity, limit.requests_per_unit) * window >= EXACT:
            return (
                "token_bucket needs burst and requests_per_unit x unit in milliseconds "
                "below 2^53"
            )
        return None

    def keys(self, base: str, limit: Limit, now: float) -> tuple[str, ...]:
        return (f"{base}tb",)

    def step(
        self, cells: MemoryCells, base: str, hits: int, limit: Limit, now: float, *, commit: bool
    ) -> Usage:
        key = f"{base}tb"
        state, usage = step(cells.state(key, now), now_ms(now), hits, limit)
        if commit:
            window = limit.unit.seconds * 1000
            missing = limit.capacity * window - state[0]
            until = now + (missing // max(1, limit.requests_per_unit) + 1000) / 1000
            cells.set_state(key, state, until)
        return usage

    def script_op(self, base: str, limit: Limit, now: float) -> ScriptOp:
        key = f"{base}tb"
        return ScriptOp((key, key), (now_ms(now), limit.requests_per_unit,
                                     limit.unit.seconds * 1000))

    def usage(self, reply: Sequence[Any], hits: int, limit: Limit, now: float) -> Usage:
        full = limit.capacity * limit.unit.seconds * 1000
        missing = full - int(reply[2])
        return Usage(int(reply[0]), int(reply[1]),
                     _refill_seconds(missing, limit.requests_per_unit))

    def over_until(
        self, reply: Sequence[Any], usage: Usage, limit: Limit, now: float
    ) -> float | None:
        # Over for one hit until one whole token has refilled.
        window = limit.unit.seconds * 1000
        wait_ms = max(0, window - int(reply[2])) / max(1, limit.requests_per_unit)
        return now + wait_ms / 1000


TOKEN_BUCKET = TokenBucket()
