"""Hostile RateLimitRequests: huge hits_addend, 2^63 and 2^64-1, fuzzed by Hypothesis.

The rule: bad input never turns into an allow or a silent fail-open, and one
descriptor that cannot be counted never opens the whole request. Each request of the
fuzz carries a control descriptor that is already over its limit: whatever else the
request holds, the answer must be OVER_LIMIT (or INVALID_ARGUMENT for a malformed
request), the store must never have failed, and the answer must serialise.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import grpc
import pytest
from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
from envoy.service.ratelimit.v3 import rls_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ratelimit_service.adapter import to_query, to_response
from ratelimit_service.decision import Code, RequestError
from ratelimit_service.limiter import FailureMode, RateLimiter
from ratelimit_service.stores import CounterStore
from ratelimit_service.stores.cluster import connect_cluster
from ratelimit_service.stores.memory import MemoryStore
from ratelimit_service.stores.redis import RedisOptions, RedisStore, connect_single
from tests.kits.ratelimit_kit import OVER, Clock, descriptor, make_limiter, rules_from, serve
from tests.kits.ratelimit_kit import request as rls_request
from tests.kits.redis_procs import RedisCluster, RedisProcess, start_cluster
from tollgate.metrics import REGISTRY

pytestmark = pytest.mark.integration

CONFIG = """
domain: fz
descriptors:
  - key: exhausted
    rate_limit: {unit: hour, requests_per_unit: 1}
  - key: user
    rate_limit: {unit: minute, requests_per_unit: 3}
  - key: bucket
    rate_limit: {unit: minute, requests_per_unit: 5, algorithm: gcra}
  - key: tokens
    rate_limit: {unit: second, requests_per_unit: 2, algorithm: token_bucket, burst: 4}
  - key: smooth
    rate_limit: {unit: minute, requests_per_unit: 4, algorithm: sliding_window}
  - key: stacked
    rate_limits:
      - {unit: second, requests_per_unit: 2}
      - {unit: day, requests_per_unit: 50, algorithm: gcra}
  - key: plan
    descriptors:
      - key: subject
        rate_limit_by:
          key: plan
          values:
            gold: {unit: minute, requests_per_unit: 600}
          default: {unit: minute, requests_per_unit: 2}
  - key: path
    value: "/api/*"
    rate_limit: {unit: minute, requests_per_unit: 2}
  - key: free
    rate_limit: {unlimited: true}
"""
CONTROL = ("exhausted", "control")
HUGE = [10**17, 2**53, 2**53 + 1, 2**63 - 1, 2**63, 2**64 - 1]


@pytest.fixture(scope="module")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    cluster = start_cluster(tmp_path_factory.mktemp("hostile-cluster"))
    try:
        yield cluster
    finally:
        cluster.stop()


def store_of(kind: str, request_: pytest.FixtureRequest) -> CounterStore:
    if kind == "memory":
        return MemoryStore()
    if kind == "redis":
        server: RedisProcess = request_.getfixturevalue("redis_server")
        return RedisStore(connect_single(server.url, RedisOptions(timeout=5)))
    cluster: RedisCluster = request_.getfixturevalue("redis_cluster")
    return RedisStore(connect_cluster([("127.0.0.1", n.port) for n in cluster.nodes],
                                      RedisOptions(timeout=5)))


def failed_open() -> float:
    return REGISTRY.get_sample_value(
        "tollgate_ratelimit_decisions_total", {"outcome": "failed_open"}) or 0.0


def internal() -> float:
    return REGISTRY.get_sample_value(
        "tollgate_ratelimit_decisions_total", {"outcome": "internal_error"}) or 0.0


@pytest.mark.parametrize("kind", ["memory", "redis", "cluster"])
@pytest.mark.parametrize("hits", HUGE)
def test_a_huge_hits_addend_never_opens_the_request(
    kind: str, hits: int, request: pytest.FixtureRequest
) -> None:
    """Issue 15 item 1: on Redis a hits_addend >= ~1e17 failed the whole script and the
    request failed open, the exhausted descriptor with it. Item 2: GCRA with 2^63 hits
    answered gRPC UNKNOWN."""
    store = store_of(kind, request)
    limiter = make_limiter(rules_from(CONFIG), store=store, failure_mode=FailureMode.OPEN)
    build = rls_request

    async def main() -> None:
        async with serve(limiter) as served:
            control = build("fz", descriptor(CONTROL))
            await served.call(control)  # now over its limit of 1 an hour
            opened, errors = failed_open(), internal()
            for key in ("user", "bucket", "tokens", "smooth", "stacked"):
                huge = build("fz", descriptor(CONTROL), descriptor((key, f"h{hits}"), hits=hits))
                response = await served.call(huge)
                assert response.overall_code == OVER, key
                assert [s.code for s in response.statuses] == [OVER, OVER], key
                # The huge descriptor alone is over too, and was counted, not skipped.
                alone = await served.call(build("fz", descriptor((key, f"h{hits}"))))
                assert alone.statuses[0].HasField("current_limit"), key
            assert (failed_open(), internal()) == (opened, errors)
            assert limiter.stats.get("service", "store_error") == 0
        await store.close()

    asyncio.run(main())


SAFE_TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=24)
KEYS = st.sampled_from(["user", "bucket", "tokens", "smooth", "stacked", "plan", "subject",
                        "path", "free", "exhausted", "{", "}", ""]) | SAFE_TEXT
VALUES = st.sampled_from(["a", "gold", "/api/x", "{tag}", "}", "{", "", "x" * 3000]) | SAFE_TEXT
HITS = st.none() | st.sampled_from([0, 1, 2, *HUGE]) | st.integers(0, 2**64 - 1)


@st.composite
def rls_descriptors(draw: st.DrawFn) -> ratelimit_pb2.RateLimitDescriptor:
    entries = draw(st.lists(st.tuples(KEYS, VALUES), max_size=3))
    d = ratelimit_pb2.RateLimitDescriptor(
        entries=[ratelimit_pb2.RateLimitDescriptor.Entry(key=k, value=v) for k, v in entries]
    )
    hits = draw(HITS)
    if hits is not None:
        d.hits_addend.value = hits
    if draw(st.booleans()) and draw(st.booleans()):
        d.limit.requests_per_unit = draw(st.integers(0, 2**32 - 1))
        d.limit.unit = draw(st.integers(0, 9))
    return d


@st.composite
def rls_requests(draw: st.DrawFn) -> bytes:
    req = rls_pb2.RateLimitRequest(
        domain=draw(st.sampled_from(["fz", "fz", "fz", "", "other"])),
        descriptors=draw(st.lists(rls_descriptors(), max_size=4)),
        hits_addend=draw(st.sampled_from([0, 1, 2**32 - 1]) | st.integers(0, 2**32 - 1)),
    )
    if req.domain == "fz" and draw(st.booleans()):
        req.descriptors.append(descriptor(CONTROL))
    return req.SerializeToString()


def answer(limiter: RateLimiter, raw: bytes) -> tuple[rls_pb2.RateLimitRequest, object]:
    """What the servicer does with these bytes: parse, decide, build the answer."""
    req = rls_pb2.RateLimitRequest.FromString(raw)
    try:
        decision = asyncio.get_event_loop().run_until_complete(
            limiter.should_rate_limit(to_query(req)))
    except RequestError:
        return req, None  # INVALID_ARGUMENT, with the reason
    response = to_response(decision)
    assert rls_pb2.RateLimitResponse.FromString(response.SerializeToString()) == response
    return req, decision


@pytest.mark.parametrize(("kind", "examples"), [("memory", 400), ("redis", 300),
                                                ("cluster", 150)])
def test_fuzzed_requests_never_allow_past_an_exhausted_limit_nor_fail_open(
    kind: str, examples: int, request: pytest.FixtureRequest
) -> None:
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    store = store_of(kind, request)
    limiter = make_limiter(rules_from(CONFIG), store=store, clock=Clock(),
                           failure_mode=FailureMode.OPEN)
    seen = {"answered": 0, "invalid": 0, "controlled": 0}
    try:
        answer(limiter, rls_request("fz", descriptor(CONTROL)).SerializeToString())

        @settings(max_examples=examples, deadline=None, database=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
        @given(raw=rls_requests())
        def check(raw: bytes) -> None:
            req, decision = answer(limiter, raw)
            if decision is None:
                seen["invalid"] += 1
                return
            seen["answered"] += 1
            assert not decision.failed_open  # type: ignore[attr-defined]
            controlled = any(
                [(e.key, e.value) for e in d.entries] == [CONTROL] and not d.HasField("limit")
                and (not d.HasField("hits_addend") or d.hits_addend.value > 0)
                for d in req.descriptors
            )
            if req.domain == "fz" and controlled:
                seen["controlled"] += 1
                assert decision.overall_code is Code.OVER_LIMIT  # type: ignore[attr-defined]

        check()
        assert limiter.stats.get("service", "store_error") == 0
        assert seen["controlled"] > examples // 10 and seen["invalid"] > 0
    finally:
        loop.run_until_complete(store.close())
        loop.close()
        asyncio.set_event_loop(None)


def test_malformed_requests_are_refused_with_a_reason_not_an_internal_error() -> None:
    limiter = make_limiter(rules_from(CONFIG))
    build = rls_request

    async def main() -> None:
        async with serve(limiter) as served:
            bad_unit = descriptor(("user", "u"), override=(5, 42))
            for req, reason in (
                (build("fz", bad_unit), "descriptor limit override has unknown unit 42"),
                (build("", descriptor(("user", "u"))), "rate limit domain must not be empty"),
                (build("fz"), "rate limit descriptor list must not be empty"),
            ):
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await served.call(req)
                assert (err.value.code(), err.value.details()) == (
                    grpc.StatusCode.INVALID_ARGUMENT, reason)

    asyncio.run(main())
