"""Sliding window (two-window estimate): smoother than a fixed window at its edges.

It reuses the fixed-window counters (same keys), keeping each for two windows, and
weighs the previous window by how much of it still overlaps the sliding window:
`used = floor(previous * (1 - elapsed / window)) + current`. A client cannot send a
full limit at the end of one window and another at the start of the next.
"""

from __future__ import annotations

import math

from ratelimit_service.algorithms import fixed_window
from ratelimit_service.model import Unit, Usage


def keys(base: str, now: float, unit: Unit) -> tuple[str, str]:
    """(current window key, previous window key)."""
    start = fixed_window.window_start(now, unit)
    return f"{base}{start}", f"{base}{start - unit.seconds}"


def previous_weight(now: float, unit: Unit) -> float:
    seconds = unit.seconds
    elapsed = now - fixed_window.window_start(now, unit)
    return max(0.0, (seconds - elapsed) / seconds)


def usage(current_after: int, previous: int, hits: int, now: float, unit: Unit) -> Usage:
    """Usage from the current window's count after `hits` and the previous window's."""
    carried = math.floor(previous * previous_weight(now, unit))
    return Usage(
        carried + current_after - hits,
        carried + current_after,
        fixed_window.reset_seconds(now, unit),
    )
