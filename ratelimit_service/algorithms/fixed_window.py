"""Fixed window, as the reference counts: one counter per (descriptor, window start).

Window starts are `now // unit * unit` in Unix seconds, so every replica agrees on
them and a key expires with its window.
"""

from __future__ import annotations

from ratelimit_service.model import Unit, Usage


def window_start(now: float, unit: Unit) -> int:
    seconds = unit.seconds
    return int(now) // seconds * seconds


def window_key(base: str, now: float, unit: Unit) -> str:
    """The reference's cache key: `prefix + domain_key_value_..._` + window start."""
    return f"{base}{window_start(now, unit)}"


def reset_seconds(now: float, unit: Unit) -> int:
    seconds = unit.seconds
    return seconds - int(now) % seconds


def usage(count_after: int, hits: int, now: float, unit: Unit) -> Usage:
    """Usage from the counter's value after adding `hits`."""
    return Usage(count_after - hits, count_after, reset_seconds(now, unit))


def charged_hits(
    current: list[int], hits: list[int], limits: list[int], *, cached_over: bool
) -> list[int]:
    """Hits to add per fixed-window counter under STOP_CACHE_KEY_INCREMENT_WHEN_OVERLIMIT.

    The reference's rule: if any counter of the request is already known over its
    limit (local cache), add nothing; else if some counters would go over, add hits
    only to those (a rejected request does not use up its other limits); else add
    all. `current` are the counts before this request.
    """
    if cached_over:
        return [0] * len(hits)
    over = [c + h > lim for c, h, lim in zip(current, hits, limits, strict=True)]
    if not any(over):
        return list(hits)
    return [h if o else 0 for h, o in zip(hits, over, strict=True)]
