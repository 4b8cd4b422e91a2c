"""Conformance: one case per rule of issue 3, through real gRPC on 127.0.0.1.

The expected answers are envoyproxy/ratelimit's (src/service/ratelimit.go,
src/limiter/base_limiter.go, src/config/config_impl.go), with an injected clock.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import grpc
import pytest
from envoy.service.ratelimit.v3 import rls_pb2
from google.protobuf import json_format

from ratelimit_service.config import load_rules
from ratelimit_service.decision import DecisionSettings, HeaderNames
from ratelimit_service.limiter import FailureMode, RateLimiter
from ratelimit_service.models import CounterOp, Usage
from ratelimit_service.rules import RuleSet
from ratelimit_service.stores import StoreUnavailable
from tests.kits.ratelimit_kit import (
    OK,
    OVER,
    Clock,
    Served,
    descriptor,
    make_limiter,
    request,
    rules_from,
    serve,
)
from tollgate.metrics import REGISTRY

FIXTURES = Path(__file__).parent / "fixtures" / "valid"
Unit = rls_pb2.RateLimitResponse.RateLimit
MAX_UINT32 = 2**32 - 1

CONFIG = """
domain: conf
descriptors:
  - key: user
    rate_limit: {unit: minute, requests_per_unit: 3}
  - key: user
    value: vip
    rate_limit: {unit: minute, requests_per_unit: 5}
  - key: path
    value: /api/*
    rate_limit: {unit: minute, requests_per_unit: 2}
  - key: path
    rate_limit: {unit: minute, requests_per_unit: 4}
  - key: org
    value: acme
    descriptors:
      - key: team
        rate_limit: {unit: hour, requests_per_unit: 2}
  - key: free
    rate_limit: {unlimited: true, name: free}
  - key: general
    rate_limit: {unit: second, requests_per_unit: 1, name: general}
  - key: special
    rate_limit:
      unit: second
      requests_per_unit: 5
      replaces: [{name: general}]
  - key: watch
    shadow_mode: true
    rate_limit: {unit: minute, requests_per_unit: 1}
  - key: daily
    quota_mode: true
    rate_limit: {unit: day, requests_per_unit: 2}
  - key: monthly
    quota_mode: true
    rate_limit: {unit: month, requests_per_unit: 1}
  - key: bucket
    rate_limit: {unit: minute, requests_per_unit: 2, algorithm: gcra}
"""


def conf_rules() -> RuleSet:
    return rules_from(CONFIG)


def run(
    scenario: Callable[[Served, Clock, RateLimiter], Awaitable[None]],
    *,
    rules: RuleSet | None = None,
    settings: DecisionSettings | None = None,
) -> None:
    clock = Clock()
    limiter = make_limiter(rules or conf_rules(), clock=clock, settings=settings)

    async def main() -> None:
        async with serve(limiter) as served:
            await scenario(served, clock, limiter)

    asyncio.run(main())


def statuses(response: rls_pb2.RateLimitResponse) -> list[tuple[int, int, int, int]]:
    """(code, requests_per_unit, limit_remaining, duration_until_reset) per descriptor."""
    return [
        (s.code, s.current_limit.requests_per_unit, s.limit_remaining,
         s.duration_until_reset.seconds)
        for s in response.statuses
    ]


def test_unknown_domain_and_no_match_are_ok_without_limit() -> None:
    async def scenario(served: Served, clock: Clock, limiter: RateLimiter) -> None:
        for req in (request("nope", descriptor(("user", "a"))),
                    request("conf", descriptor(("nothing", "x")))):
            response = await served.call(req)
            assert response.overall_code == OK
            assert len(response.statuses) == 1
            assert not response.statuses[0].HasField("current_limit")
            assert response.statuses[0].code == OK
    run(scenario)


def test_key_value_first_then_wildcard_then_bare_key() -> None:
    async def scenario(served: Served, clock: Clock, limiter: RateLimiter) -> None:
        vip = await served.call(request("conf", descriptor(("user", "vip"))))
        other = await served.call(request("conf", descriptor(("user", "bob"))))
        api = await served.call(request("conf", descriptor(("path", "/api/x"))))
        web = await served.call(request("conf", descriptor(("path", "/web"))))
        assert [statuses(r)[0][1] for r in (vip, other, api, web)] == [5, 3, 2, 4]
    run(scenario)


def test_limit_applies_only_when_the_last_entry_lands_on_it() -> None:
    async def scenario(served: Served, clock: Clock, limiter: RateLimiter) -> None:
        team = descriptor(("org", "acme"), ("team", "red"))
        assert [(await served.call(request("conf", team))).overall_code
                for _ in range(3)] == [OK, OK, OVER]
        org_only = await served.call(request("conf", descriptor(("org", "acme"))))
        assert not org_only.statuses[0].HasField("current_limit")
        deeper = descriptor(("org", "acme"), ("team", "red"), ("x", "y"))
        assert (await served.call(request("conf", deeper))).overall_code == OK
    run(scenario)


def test_status_fields_and_overall_code() -> None:
    async def scenario(served: Served, clock: Clock, limiter: RateLimiter) -> None:
        req = request("conf", descriptor(("user", "ann")), descriptor(("path", "/web")))
        first = await served.call(req)
        assert first.overall_code == OK
        # T0 is 10 s into its minute: 50 s until the window resets.
        assert statuses(first) == [(OK, 3, 2, 50), (OK, 4, 3, 50)]
        assert first.statuses[0].current_limit.unit == Unit.MINUTE
        await served.call(req)
        await served.call(req)
        fourth = await served.call(req)
        assert fourth.overall_code == OVER
        assert statuses(fourth) == [(OVER, 3, 0, 50), (OK, 4, 0, 50)]
    run(scenario)


def test_window_edge_with_the_injected_clock() -> None:
    async def scenario(served: Served, clock: Clock, limiter: RateLimiter) -> None:
        req = request("conf", descriptor(("user", "edge")))
        assert await served.codes(req, 4) == [OK, OK, OK, OVER]
        clock.advance(49.999)  # still the same minute
        assert await served.codes(req, 1) == [OVER]
        clock.advance(0.001)  # the next minute begins
        response = await served.call(req)
        assert statuses(response) == [(OK, 3, 2, 60)]
    run(scenario)


def test_envoy_limit_override_is_honoured() -> None:
    async def scenario(served: Served, clock: Clock, limiter: RateLimiter) -> None:
        req = request("conf", descriptor(("user", "o"), override=(1, Unit.HOUR)))
        first, second = await served.call(req), await served.call(req)
        assert statuses(first) == [(OK, 1, 0, 3600 - 10)]
        assert second.overall_code == OVER
        unknown = request("nope", descriptor(("user", "o"), override=(1, Unit.HOUR)))
        assert await served.codes(unknown, 3) == [OK, OK, OK]
    run(scenario)


def test_hits_addend_request_level_and_per_descriptor() -> None:
    async def scenario(served: Served, clock: Clock, limiter: RateLimiter) -> None:
        both = await served.call(request("conf", descriptor(("path", "/a")), hits=3))
        assert statuses(both) == [(OK, 4, 1, 50)]
        own = await served.call(
            request("conf", descriptor(("path", "/a"), hits=1), descriptor(("user", "h")), hits=2)
        )
        assert statuses(own) == [(OK, 4, 0, 50), (OK, 3, 1, 50)]
        check_only = await served.call(request("conf", descriptor(("path", "/a"), hits=0)))
        assert statuses(check_only) == [(OK, 4, 0, 50)]
        over = await served.call(request("conf", descriptor(("path", "/a"), hits=1)))
        assert over.overall_code == OVER
    run(scenario)


def test_unlimited_is_ok_with_max_remaining() -> None:
    async def scenario(served: Served, clock: Clock, limiter: RateLimiter) -> None:
        response = await served.call(request("conf", descriptor(("free", "x"))))
        assert response.overall_code == OK
        status = response.statuses[0]
        assert (status.code, status.limit_remaining) == (OK, MAX_UINT32)
        assert not status.HasField("current_limit")
    run(scenario)


def test_replaces_removes_the_replaced_limit() -> None:
    async def scenario(served: Served, clock: Clock, limiter: RateLimiter) -> None:
        alone = request("conf", descriptor(("general", "g")))
        assert await served.codes(alone, 2) == [OK, OVER]
        together = request("conf", descriptor(("general", "g")), descriptor(("special", "s")))
        response = await served.call(together)
        assert response.overall_code == OK
        assert not response.statuses[0].HasField("current_limit")
        assert statuses(response)[1] == (OK, 5, 4, 1)
    run(scenario)


def test_shadow_mode_per_limit_answers_ok_but_counts() -> None:
    async def scenario(served: Served, clock: Clock, limiter: RateLimiter) -> None:
        req = request("conf", descriptor(("watch", "w")))
        responses = [await served.call(req) for _ in range(3)]
        assert [r.overall_code for r in responses] == [OK, OK, OK]
        assert [statuses(r)[0] for r in responses] == [(OK, 1, 0, 50)] * 3
        assert limiter.stats.get("conf.watch", "shadow_mode") == 2
        assert limiter.stats.get("conf.watch", "over_limit") == 2
    run(scenario)


def test_global_shadow_mode_reports_over_limit_but_answers_ok() -> None:
    async def scenario(served: Served, clock: Clock, limiter: RateLimiter) -> None:
        req = request("conf", descriptor(("user", "s")))
        responses = [await served.call(req) for _ in range(4)]
        assert [r.overall_code for r in responses] == [OK] * 4
        assert responses[-1].statuses[0].code == OVER
    run(scenario, settings=DecisionSettings(shadow_mode=True))


def test_quota_mode_is_over_only_when_every_quota_is_over() -> None:
    async def scenario(served: Served, clock: Clock, limiter: RateLimiter) -> None:
        monthly = descriptor(("monthly", "m"))
        daily = descriptor(("daily", "d"))
        first = await served.call(request("conf", monthly, daily))
        assert first.overall_code == OK
        # monthly (1) is now over, daily (2) is not: still OK.
        second = await served.call(request("conf", monthly, daily))
        assert [s.code for s in second.statuses] == [OVER, OK]
        assert second.overall_code == OK
        third = await served.call(request("conf", monthly, daily))
        assert [s.code for s in third.statuses] == [OVER, OVER]
        assert third.overall_code == OVER
        # Long windows: remaining quota and time to reset are visible.
        quota = await served.call(request("conf", descriptor(("daily", "other"))))
        assert statuses(quota) == [(OK, 2, 1, 86400 - int(clock.now) % 86400)]
        # A rate limit over the limit decides even next to passing quotas.
        rate = request("conf", descriptor(("daily", "fresh")), descriptor(("general", "q")))
        assert [(await served.call(rate)).overall_code for _ in range(2)] == [OK, OVER]
    run(scenario)


def test_near_limit_ratio_is_counted() -> None:
    async def scenario(served: Served, clock: Clock, limiter: RateLimiter) -> None:
        req = request("conf", descriptor(("path", "/n")))  # limit 4, near = floor(4*0.5) = 2
        await served.codes(req, 5)
        assert limiter.stats.get("conf.path", "near_limit") == 2
        assert limiter.stats.get("conf.path", "over_limit") == 1
        assert limiter.stats.get("conf.path", "within_limit") == 4
        assert limiter.stats.get("conf.path", "total_hits") == 5
    run(scenario, settings=DecisionSettings(near_limit_ratio=0.5))


def test_rate_limit_headers_when_enabled() -> None:
    async def scenario(served: Served, clock: Clock, limiter: RateLimiter) -> None:
        req = request("conf", descriptor(("user", "hd")), descriptor(("path", "/web")))
        first = await served.call(req)
        assert [(h.key, h.value) for h in first.response_headers_to_add] == [
            ("X-RateLimit-Limit", "3"), ("X-RateLimit-Remaining", "2"),
            ("X-RateLimit-Reset", "50"),
        ]
        for _ in range(3):
            last = await served.call(req)
        assert [(h.key, h.value) for h in last.response_headers_to_add] == [
            ("X-RateLimit-Limit", "3"), ("X-RateLimit-Remaining", "0"),
            ("X-RateLimit-Reset", "50"),
        ]
    run(scenario, settings=DecisionSettings(headers=HeaderNames()))


def test_no_headers_by_default() -> None:
    async def scenario(served: Served, clock: Clock, limiter: RateLimiter) -> None:
        response = await served.call(request("conf", descriptor(("user", "x"))))
        assert len(response.response_headers_to_add) == 0
    run(scenario)


def test_opt_in_gcra_smooths_the_limit() -> None:
    async def scenario(served: Served, clock: Clock, limiter: RateLimiter) -> None:
        req = request("conf", descriptor(("bucket", "b")))  # 2 per minute: one per 30 s
        assert await served.codes(req, 3) == [OK, OK, OVER]
        clock.advance(29)
        assert await served.codes(req, 1) == [OVER]
        clock.advance(1)
        assert await served.codes(req, 2) == [OK, OVER]
    run(scenario)


@pytest.mark.parametrize(
    ("req", "message"),
    [
        (request("", descriptor(("user", "a"))), "rate limit domain must not be empty"),
        (request("conf"), "rate limit descriptor list must not be empty"),
    ],
)
def test_malformed_requests_are_invalid_argument(
    req: rls_pb2.RateLimitRequest, message: str
) -> None:
    async def scenario(served: Served, clock: Clock, limiter: RateLimiter) -> None:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await served.call(req)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert err.value.details() == message
    run(scenario)


def test_reference_config_answers_as_documented() -> None:
    """basic_config.yaml + shadowmode/wildcard semantics, loaded unchanged."""
    rules = load_rules(FIXTURES / "basic_config.yaml")

    async def scenario(served: Served, clock: Clock, limiter: RateLimiter) -> None:
        sub = request("test-domain", descriptor(("key1", "value1"), ("subkey1", "x")))
        assert await served.codes(sub, 6) == [OK] * 5 + [OVER]
        special = request("test-domain", descriptor(("key1", "value1"), ("subkey1", "subvalue1")))
        assert await served.codes(special, 11) == [OK] * 10 + [OVER]
        whitelisted = request("test-domain", descriptor(("key2", "value3")))
        assert await served.codes(whitelisted, 50) == [OK] * 50
        unlimited = await served.call(request("test-domain", descriptor(("key6", "z"))))
        assert unlimited.statuses[0].limit_remaining == MAX_UINT32
        named = await served.call(request("test-domain", descriptor(("key4", "n"))))
        assert named.statuses[0].current_limit.name == "key4_rate_limit"
    run(scenario, rules=rules)


def test_share_threshold_shares_one_counter_across_values() -> None:
    rules = load_rules(FIXTURES / "share_threshold.yaml")

    async def scenario(served: Served, clock: Clock, limiter: RateLimiter) -> None:
        for i in range(100):
            one = descriptor(("files", f"files/{i}"))
            response = await served.call(request("test-domain", one))
            assert response.overall_code == OK
        over = await served.call(request("test-domain", descriptor(("files", "files/new"))))
        assert over.overall_code == OVER
    run(scenario, rules=rules)


class BrokenStore:
    async def apply(self, ops: Sequence[CounterOp], now: float) -> list[Usage]:
        raise StoreUnavailable("down")

    async def close(self) -> None:
        return None


@pytest.mark.parametrize("mode", [FailureMode.OPEN, FailureMode.CLOSED])
def test_store_outage_fails_open_or_closed(mode: FailureMode) -> None:
    limiter = make_limiter(conf_rules(), store=BrokenStore(), failure_mode=mode)

    def outcome(name: str) -> float:
        value = REGISTRY.get_sample_value("tollgate_ratelimit_decisions_total", {"outcome": name})
        return value or 0.0

    async def main() -> None:
        async with serve(limiter) as served:
            req = request("conf", descriptor(("user", "a")), descriptor(("nothing", "x")))
            if mode is FailureMode.OPEN:
                before = outcome("failed_open")
                response = await served.call(req)
                assert response.overall_code == OK
                assert [s.code for s in response.statuses] == [OK, OK]
                assert limiter.stats.get("service", "failure_mode_open") == 1
                assert outcome("failed_open") == before + 1
            else:
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await served.call(req)
                assert err.value.code() == grpc.StatusCode.UNAVAILABLE
            # No counted limit: no store call, answered either way.
            free = await served.call(request("conf", descriptor(("free", "x"))))
            assert free.overall_code == OK

    asyncio.run(main())


def test_concurrent_requests_never_exceed_the_limit_in_memory() -> None:
    async def scenario(served: Served, clock: Clock, limiter: RateLimiter) -> None:
        req = request("conf", descriptor(("path", "/busy")), hits=1)  # limit 4
        codes = await asyncio.gather(*(served.call(req) for _ in range(50)))
        assert sum(1 for r in codes if r.overall_code == OK) == 4
    run(scenario)


def test_response_dynamic_metadata_carries_passed_limits_metadata() -> None:
    rules = load_rules(FIXTURES / "metadata.yaml")

    async def scenario(served: Served, clock: Clock, limiter: RateLimiter) -> None:
        req = request(
            "test-domain",
            descriptor(("key1", "value1"), ("subkey1", "x")),
            descriptor(("key2", "y"), hits=2),
        )
        response = await served.call(req)
        meta = json_format.MessageToDict(response.dynamic_metadata)
        assert meta == {
            "domain": "test-domain",
            "descriptors": [
                {"entries": ["key1=value1", "subkey1=x"]},
                {"entries": ["key2=y"], "hitsAddend": 2.0},
            ],
            "metadata": {"name": "service_1", "service_with_quota": {"name": "service_2"}},
        }
        # Over the limit: that limit's metadata is left out.
        for _ in range(5):
            response = await served.call(req)
        meta = json_format.MessageToDict(response.dynamic_metadata)
        assert meta["metadata"] == {"service_with_quota": {"name": "service_2"}}
    run(scenario, rules=rules, settings=DecisionSettings(dynamic_metadata=True))


def test_no_dynamic_metadata_by_default() -> None:
    async def scenario(served: Served, clock: Clock, limiter: RateLimiter) -> None:
        response = await served.call(request("conf", descriptor(("user", "m"))))
        assert not response.HasField("dynamic_metadata")
    run(scenario)
