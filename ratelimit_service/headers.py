"""Rate-limit response headers from a decision's statuses, in the styles clients know.

- `reference`: envoyproxy/ratelimit's `X-RateLimit-Limit/Remaining/Reset`
  (LIMIT_RESPONSE_HEADERS_ENABLED): the numbers of the most restrictive limit.
- `draft03`: what Envoy's ratelimit filter sends with `enable_x_ratelimit_headers:
  DRAFT_VERSION_03`: the same three headers, the limit header also listing every
  limit's quota policy (`10, 10;w=1, 1000;w=3600;name="daily"`).
- `ietf`: the IETF httpapi draft's structured fields, `RateLimit-Policy` (every
  policy: `"daily";q=1000;w=86400`) and `RateLimit` (the most restrictive: `"daily";r=3;t=30`).

A descriptor with stacked windows contributes every window: each is a quota policy
of its own, and the most restrictive window of all may be the one reported. A
limit's number is its capacity (`requests_per_unit`, or a token bucket's burst).

`Retry-After` (RFC 9110 §10.2.3) goes with an over-limit answer: the seconds until the
limiting counter has room again.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence

from ratelimit_service.models import Limit
from ratelimit_service.status import Code, DescriptorStatus

Header = tuple[str, str]


class HeaderStyle(enum.StrEnum):
    NONE = "none"
    REFERENCE = "reference"
    DRAFT03 = "draft03"
    IETF = "ietf"


def _limited(statuses: Sequence[DescriptorStatus]) -> list[DescriptorStatus]:
    """Every window with a limit, stacked windows expanded, in order."""
    return [w for s in statuses for w in s.each_window() if w.current_limit is not None]


def _most_restrictive(statuses: Sequence[DescriptorStatus]) -> DescriptorStatus | None:
    """As the reference picks: the last over-limit status if any, else the first with
    the least remaining."""
    chosen: DescriptorStatus | None = None
    for status in statuses:
        if (
            chosen is None
            or status.code is Code.OVER_LIMIT
            or (chosen.code is not Code.OVER_LIMIT
                and status.limit_remaining < chosen.limit_remaining)
        ):
            chosen = status
    return chosen


def _policy_name(status: DescriptorStatus) -> str:
    limit = status.current_limit
    if limit is None:
        return "unlimited"
    if limit.name:
        return limit.name
    return f"{limit.requests_per_unit}-per-{limit.unit.name.lower()}"


def _sf_string(text: str) -> str:
    # RFC 8941 sf-string: printable ASCII, with '"' and '\\' escaped.
    clean = "".join(c for c in text if 0x20 <= ord(c) < 0x7F)
    return '"' + clean.replace("\\", "\\\\").replace('"', '\\"') + '"'


# The part of a header that depends only on which limits a request met (their quota
# policies), kept by those limits: a request then renders only its own numbers.
_POLICIES: dict[tuple[HeaderStyle, tuple[Limit, ...]], str] = {}
_KEPT_POLICIES = 4096


def _policies(style: HeaderStyle, limited: Sequence[DescriptorStatus]) -> str:
    limits = tuple(s.current_limit for s in limited if s.current_limit is not None)
    key = (style, limits)
    found = _POLICIES.get(key)
    if found is not None:
        return found
    if style is HeaderStyle.IETF:
        text = ", ".join(
            f"{_sf_string(_policy_name(s))};q={s.current_limit.capacity};"
            f"w={s.current_limit.unit.seconds}"
            for s in limited
            if s.current_limit is not None
        )
    else:
        text = "".join(
            f", {limit.capacity};w={limit.unit.seconds}"
            + (f";name={_sf_string(limit.name)}" if limit.name else "")
            for limit in limits
        )
    if len(_POLICIES) >= _KEPT_POLICIES:
        _POLICIES.clear()
    _POLICIES[key] = text
    return text


def rate_limit_headers(
    statuses: Sequence[DescriptorStatus],
    style: HeaderStyle,
    names: tuple[str, str, str] = ("X-RateLimit-Limit", "X-RateLimit-Remaining",
                                   "X-RateLimit-Reset"),
) -> tuple[Header, ...]:
    """The headers of `style` for these statuses (none when no status has a limit)."""
    if style is HeaderStyle.NONE:
        return ()
    limited = _limited(statuses)
    top = _most_restrictive(limited)
    if top is None or top.current_limit is None:
        return ()
    reset = str(top.duration_until_reset or 0)
    if style is HeaderStyle.IETF:
        current = f"{_sf_string(_policy_name(top))};r={top.limit_remaining};t={reset}"
        return (("RateLimit-Policy", _policies(style, limited)), ("RateLimit", current))
    limit_value = str(top.current_limit.capacity)
    if style is HeaderStyle.DRAFT03:
        limit_value += _policies(style, limited)
    return ((names[0], limit_value), (names[1], str(top.limit_remaining)), (names[2], reset))


def retry_after(statuses: Sequence[DescriptorStatus]) -> int | None:
    """Seconds until every over-limit counter has room (None when nothing is over)."""
    waits = [w.duration_until_reset or 0 for s in statuses for w in s.each_window()
             if w.code is Code.OVER_LIMIT]
    if not waits:
        return None
    return max(1, *waits)
