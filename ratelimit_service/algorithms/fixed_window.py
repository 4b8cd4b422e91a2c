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
