"""The neutral answer types: per-descriptor statuses and the Answer (pure values).

Re-exported by `ratelimit_service.decision`; both doors turn them into their wire
answers, and `ratelimit_service.headers` renders them as rate-limit headers.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ratelimit_service.models import Limit


class Code(enum.IntEnum):
    """Envoy's `RateLimitResponse.Code` values."""

    UNKNOWN = 0
    OK = 1
    OVER_LIMIT = 2


# Built per request: not frozen (a frozen dataclass's __init__ costs ~1 µs more, one
# object.__setattr__ per field); nothing assigns to it once built.
@dataclass(slots=True)
class DescriptorStatus:
    """One descriptor's answer: the most restrictive of its windows.

    `windows` lists every window's own status when the descriptor has several
    (stacked limits), in config order; empty for a single limit. `error` is set when
    the store could not count this descriptor (answered OK under FailureMode.OPEN;
    a caller with its own per-descriptor failure rule can read it).
    """

    code: Code
    current_limit: Limit | None = None
    limit_remaining: int = 0
    duration_until_reset: int | None = None
    windows: tuple[DescriptorStatus, ...] = ()
    error: str = ""

    def each_window(self) -> tuple[DescriptorStatus, ...]:
        """Every window of this descriptor (itself when it has one)."""
        return self.windows or (self,)


# Built per request: not frozen (a frozen dataclass's __init__ costs ~1 µs more, one
# object.__setattr__ per field); nothing assigns to it once built.
@dataclass(slots=True)
class Answer:
    """What the engine tells every door (gRPC ShouldRateLimit, authz's limit stage): the
    overall code, each descriptor's status, the headers; as authz_service.models.Answer
    is for the authz doors."""

    overall_code: Code
    statuses: tuple[DescriptorStatus, ...]
    headers: tuple[tuple[str, str], ...] = ()
    dynamic_metadata: Mapping[str, Any] | None = None
    failed_open: bool = False  # a counter could not be counted and the operator chose open


def most_restrictive(statuses: Sequence[DescriptorStatus]) -> DescriptorStatus:
    """The window that decides: over its limit the longest, else the least remaining."""
    over = [s for s in statuses if s.code is Code.OVER_LIMIT]
    if over:
        return max(over, key=lambda s: s.duration_until_reset or 0)
    return min(statuses, key=lambda s: (s.limit_remaining, -(s.duration_until_reset or 0)))
