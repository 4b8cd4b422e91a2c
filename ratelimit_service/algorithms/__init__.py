"""Counting algorithms, one module each: pure arithmetic on counter state.

Every algorithm reports a `Usage` (hits used before and after this request, seconds
until reset), so the threshold logic in `decision` is the same for all of them.
Stores perform the state changes atomically; these modules say what they are.
"""

from __future__ import annotations

from ratelimit_service.algorithms import fixed_window, gcra, sliding_window

__all__ = ["fixed_window", "gcra", "sliding_window"]
