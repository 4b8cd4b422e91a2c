"""ratelimit_service.decision.decide, directly: the reference's thresholds, stats,
shadow, quota and unlimited rules on usages given by hand (pure: no store, no clock)."""

from __future__ import annotations

import pytest

from ratelimit_service.decision import Check, DecisionSettings, HeaderNames, decide
from ratelimit_service.models import AppliedLimit, Entry, Limit, Rule, Stats, Unit, Usage
from ratelimit_service.status import Code

TEN = Limit(10, Unit.MINUTE, name="ten")
DAILY = Limit(1000, Unit.DAY, name="daily")
SETTINGS = DecisionSettings()


def check(*limits: Limit, hits: int = 1, shadow: bool = False, quota: bool = False,
          key: str = "d.k") -> Check:
    rule = Rule(key, tuple(limits), shadow_mode=shadow, quota_mode=quota)
    return Check(AppliedLimit(rule, (Entry("k", "v"),), key), False, hits)


def usage(before: int, after: int, reset: int = 30, **kw: object) -> Usage:
    return Usage(before, after, reset, **kw)  # type: ignore[arg-type]


def test_within_the_limit_is_ok_with_what_remains() -> None:
    stats = Stats()
    decision = decide([check(TEN)], [usage(3, 4)], SETTINGS, stats)
    assert decision.overall_code is Code.OK
    (status,) = decision.statuses
    assert (status.code, status.limit_remaining, status.duration_until_reset) == (Code.OK, 6, 30)
    assert status.current_limit == TEN
    assert stats.get("d.k", "total_hits") == 1 and stats.get("d.k", "within_limit") == 1


def test_crossing_the_limit_counts_only_the_hits_over_it_as_over() -> None:
    stats = Stats()
    decision = decide([check(TEN, hits=5)], [usage(7, 12)], SETTINGS, stats)
    assert decision.overall_code is Code.OVER_LIMIT
    assert decision.statuses[0].limit_remaining == 0
    assert stats.get("d.k", "over_limit") == 2  # 12 - 10
    assert stats.get("d.k", "near_limit") == 2  # 10 - max(8, 7): near is floor(10 * 0.8)


def test_already_over_counts_every_hit_as_over() -> None:
    stats = Stats()
    decide([check(TEN, hits=3)], [usage(11, 14)], SETTINGS, stats)
    assert stats.get("d.k", "over_limit") == 3
    assert stats.get("d.k", "near_limit") == 0


def test_known_over_from_the_local_cache() -> None:
    stats = Stats()
    decision = decide([check(TEN, hits=2)], [usage(12, 12, from_local_cache=True)], SETTINGS,
                      stats)
    assert decision.overall_code is Code.OVER_LIMIT
    assert stats.get("d.k", "over_limit_with_local_cache") == 2


def test_near_the_limit_by_the_ratio() -> None:
    stats = Stats()
    decide([check(TEN, hits=2)], [usage(7, 9)], DecisionSettings(near_limit_ratio=0.5), stats)
    assert stats.get("d.k", "near_limit") == 2  # both hits at or past floor(10 * 0.5)


def test_a_shadow_rule_answers_ok_and_counts_what_it_would_have_refused() -> None:
    stats = Stats()
    decision = decide([check(TEN, hits=4, shadow=True)], [usage(8, 12)], SETTINGS, stats)
    assert decision.overall_code is Code.OK
    assert decision.statuses[0].code is Code.OK and decision.statuses[0].limit_remaining == 0
    assert stats.get("d.k", "shadow_mode") == 2


def test_global_shadow_mode_answers_ok_overall() -> None:
    stats = Stats()
    decision = decide([check(TEN)], [usage(10, 11)], DecisionSettings(shadow_mode=True), stats)
    assert decision.overall_code is Code.OK
    assert decision.statuses[0].code is Code.OVER_LIMIT  # the descriptor still says so
    assert stats.get("service", "global_shadow_mode") == 1


def test_unlimited_and_unmatched_descriptors() -> None:
    decision = decide([Check(None, True, 1), Check(None, False, 1)], [], SETTINGS)
    unlimited, unmatched = decision.statuses
    assert (unlimited.code, unlimited.limit_remaining) == (Code.OK, 2**32 - 1)
    assert (unmatched.code, unmatched.current_limit) == (Code.OK, None)
    assert decision.overall_code is Code.OK


@pytest.mark.parametrize(("quota_over", "rate_over", "expected"), [
    ((True, True), False, Code.OVER_LIMIT),  # every quota over
    ((True, False), False, Code.OK),  # one quota still has room
    ((False, False), True, Code.OVER_LIMIT),  # a rate limit over
])
def test_quota_mode(quota_over: tuple[bool, bool], rate_over: bool, expected: Code) -> None:
    checks = [check(TEN, quota=True, key="d.q1"), check(TEN, quota=True, key="d.q2"),
              check(TEN, key="d.r")]
    usages = [usage(10, 11) if over else usage(1, 2) for over in (*quota_over, rate_over)]
    assert decide(checks, usages, SETTINGS).overall_code is expected


def test_stacked_windows_report_the_most_restrictive_and_list_all() -> None:
    stats = Stats()
    decision = decide([check(TEN, DAILY)], [usage(4, 5, 20), usage(998, 999, 5000)],
                      SETTINGS, stats)
    (status,) = decision.statuses
    assert status.current_limit == DAILY and status.limit_remaining == 1
    assert [w.current_limit for w in status.windows] == [TEN, DAILY]
    assert stats.get("d.k", "total_hits") == 1  # one count per request, not per window


def test_an_uncounted_descriptor_is_ok_and_carries_its_error() -> None:
    decision = decide([check(TEN)], [usage(0, 0, error="redis: timeout")], SETTINGS)
    assert decision.statuses[0].code is Code.OK
    assert decision.statuses[0].error == "redis: timeout"


def test_reference_headers_when_enabled() -> None:
    settings = DecisionSettings(headers=HeaderNames())
    decision = decide([check(TEN)], [usage(3, 4, 30)], settings)
    assert decision.headers == (("X-RateLimit-Limit", "10"), ("X-RateLimit-Remaining", "6"),
                                ("X-RateLimit-Reset", "30"))
