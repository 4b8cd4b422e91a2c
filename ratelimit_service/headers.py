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
from typing import TypeVar

from ratelimit_service.models import Limit
from ratelimit_service.status import Code, DescriptorStatus

K = TypeVar("K")
V = TypeVar("V")

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


def _policy_name(limit: Limit) -> str:
    if limit.name:
        return limit.name
    return f"{limit.requests_per_unit}-per-{limit.unit.name.lower()}"


def _sf_string(text: str) -> str:
    # RFC 8941 sf-string: printable ASCII, with '"' and '\\' escaped.
    clean = "".join(c for c in text if 0x20 <= ord(c) < 0x7F)
    return '"' + clean.replace("\\", "\\\\").replace('"', '\\"') + '"'


# What a request's headers share with every other request that met the same limits
# (their quota policies, names and numbers), kept by those limits: a request then
# renders only its own numbers. Keyed by the limits' ids for speed (hashing a Limit runs
# its dataclass __hash__); each entry keeps its limits, so an id is never reused while
# the entry exists. Bounded: cleared when full.
_KEPT = 4096
_QUOTED: dict[int, tuple[Limit, str]] = {}  # a limit's policy name as an sf-string
_POLICIES: dict[tuple[HeaderStyle, tuple[Limit, ...]], str] = {}
_ONE_LIMIT: dict[tuple[HeaderStyle, int], tuple[Limit, str]] = {}


def _keep(kept: dict[K, V], key: K, entry: V) -> None:
    """Keep one entry in one of the caches above (all of it goes when full)."""
    if len(kept) >= _KEPT:
        kept.clear()
    kept[key] = entry


def _quoted_name(limit: Limit) -> str:
    found = _QUOTED.get(id(limit))
    if found is not None and found[0] is limit:
        return found[1]
    text = _sf_string(_policy_name(limit))
    _keep(_QUOTED, id(limit), (limit, text))
    return text


def _policies(style: HeaderStyle, limits: tuple[Limit, ...]) -> str:
    key = (style, limits)
    found = _POLICIES.get(key)
    if found is not None:
        return found
    if style is HeaderStyle.IETF:
        text = ", ".join(
            f"{_quoted_name(limit)};q={limit.capacity};w={limit.unit.seconds}"
            for limit in limits
        )
    else:
        text = "".join(
            f", {limit.capacity};w={limit.unit.seconds}"
            + (f";name={_sf_string(limit.name)}" if limit.name else "")
            for limit in limits
        )
    _keep(_POLICIES, key, text)
    return text


def _fixed_part(style: HeaderStyle, top: Limit, limits: tuple[Limit, ...]) -> str:
    """The header that depends on the limits met only: the limit header (reference,
    draft03), or `RateLimit-Policy` (ietf)."""
    if style is HeaderStyle.REFERENCE:
        return str(top.capacity)
    policies = _policies(style, limits)
    return policies if style is HeaderStyle.IETF else f"{top.capacity}{policies}"


def _one_limit_part(style: HeaderStyle, limit: Limit) -> str:
    """`_fixed_part` for a request that met one limit (the usual case), kept."""
    found = _ONE_LIMIT.get((style, id(limit)))
    if found is not None and found[0] is limit:
        return found[1]
    text = _fixed_part(style, limit, (limit,))
    _keep(_ONE_LIMIT, (style, id(limit)), (limit, text))
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
    if len(statuses) == 1 and not statuses[0].windows:  # the usual: one limit met
        top = statuses[0]
        limit = top.current_limit
        if limit is None:
            return ()
        fixed = _one_limit_part(style, limit)
    else:
        limited = _limited(statuses)
        chosen = _most_restrictive(limited)
        if chosen is None or chosen.current_limit is None:
            return ()
        top, limit = chosen, chosen.current_limit
        fixed = _fixed_part(style, limit, tuple(
            [s.current_limit for s in limited if s.current_limit is not None]))
    remaining = str(top.limit_remaining)
    reset = str(top.duration_until_reset or 0)
    if style is HeaderStyle.IETF:
        current = f"{_quoted_name(limit)};r={remaining};t={reset}"
        return (("RateLimit-Policy", fixed), ("RateLimit", current))
    return ((names[0], fixed), (names[1], remaining), (names[2], reset))


def retry_after(statuses: Sequence[DescriptorStatus]) -> int | None:
    """Seconds until every over-limit counter has room (None when nothing is over)."""
    waits = [w.duration_until_reset or 0 for s in statuses for w in s.each_window()
             if w.code is Code.OVER_LIMIT]
    if not waits:
        return None
    return max(1, *waits)
