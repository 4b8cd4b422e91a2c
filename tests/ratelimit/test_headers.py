"""Rate-limit response headers in each style, from decision statuses (pure)."""

from __future__ import annotations

from ratelimit_service.decision import Code, DescriptorStatus
from ratelimit_service.headers import HeaderStyle, rate_limit_headers, retry_after
from ratelimit_service.models import Limit, Unit

PER_SECOND = Limit(10, Unit.SECOND)
DAILY = Limit(1000, Unit.DAY, name="daily")


def ok(limit: Limit, remaining: int, reset: int) -> DescriptorStatus:
    return DescriptorStatus(Code.OK, limit, remaining, reset)


def test_reference_style_reports_the_most_restrictive_limit() -> None:
    statuses = [ok(PER_SECOND, 7, 1), ok(DAILY, 3, 5000), DescriptorStatus(Code.OK)]
    assert rate_limit_headers(statuses, HeaderStyle.REFERENCE) == (
        ("X-RateLimit-Limit", "1000"), ("X-RateLimit-Remaining", "3"),
        ("X-RateLimit-Reset", "5000"),
    )


def test_draft03_lists_every_quota_policy_as_envoy_does() -> None:
    statuses = [ok(PER_SECOND, 7, 1), ok(DAILY, 3, 5000)]
    headers = dict(rate_limit_headers(statuses, HeaderStyle.DRAFT03))
    assert headers["X-RateLimit-Limit"] == '1000, 10;w=1, 1000;w=86400;name="daily"'
    assert headers["X-RateLimit-Remaining"] == "3"


def test_an_over_limit_status_is_the_one_reported_even_with_more_remaining_elsewhere() -> None:
    over = DescriptorStatus(Code.OVER_LIMIT, PER_SECOND, 0, 1)
    statuses = [ok(DAILY, 0, 5000), over]
    assert dict(rate_limit_headers(statuses, HeaderStyle.REFERENCE))["X-RateLimit-Limit"] == "10"
    assert retry_after(statuses) == 1


def test_ietf_structured_fields() -> None:
    statuses = [ok(PER_SECOND, 7, 1), ok(DAILY, 3, 5000)]
    assert rate_limit_headers(statuses, HeaderStyle.IETF) == (
        ("RateLimit-Policy", '"10-per-second";q=10;w=1, "daily";q=1000;w=86400'),
        ("RateLimit", '"daily";r=3;t=5000'),
    )


def test_names_are_quoted_safely_in_structured_fields() -> None:
    odd = Limit(5, Unit.MINUTE, name='a"b\\c\nd')
    (policy, _) = rate_limit_headers([ok(odd, 1, 2)], HeaderStyle.IETF)
    assert policy[1] == '"a\\"b\\\\cd";q=5;w=60'


def test_no_limits_no_headers_and_no_retry_after() -> None:
    assert rate_limit_headers([DescriptorStatus(Code.OK)], HeaderStyle.DRAFT03) == ()
    assert rate_limit_headers([ok(DAILY, 3, 5)], HeaderStyle.NONE) == ()
    assert retry_after([ok(DAILY, 3, 5)]) is None


def test_retry_after_is_at_least_one_second() -> None:
    assert retry_after([DescriptorStatus(Code.OVER_LIMIT, PER_SECOND, 0, 0)]) == 1


def test_kept_header_parts_follow_the_limit_and_stay_bounded(monkeypatch) -> None:
    from ratelimit_service import headers

    monkeypatch.setattr(headers, "_KEPT", 2)
    monkeypatch.setattr(headers, "_ONE_LIMIT", {})
    for _ in range(2):  # the second time from what was kept
        assert dict(rate_limit_headers([ok(PER_SECOND, 7, 1)], HeaderStyle.DRAFT03)) == {
            "X-RateLimit-Limit": "10, 10;w=1", "X-RateLimit-Remaining": "7",
            "X-RateLimit-Reset": "1"}
    other = Limit(10, Unit.SECOND, name="burst")  # equal numbers, another policy
    assert dict(rate_limit_headers([ok(other, 6, 1)], HeaderStyle.DRAFT03))[
        "X-RateLimit-Limit"] == '10, 10;w=1;name="burst"'
    assert rate_limit_headers([ok(DAILY, 3, 50)], HeaderStyle.IETF) == (
        ("RateLimit-Policy", '"daily";q=1000;w=86400'), ("RateLimit", '"daily";r=3;t=50'))
    assert len(headers._ONE_LIMIT) <= 2
