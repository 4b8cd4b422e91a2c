"""Rate limits decided in the Check, through both doors of a real authz-service: 429s
with their headers, the limit before authentication, shadow sets, and the store (memory
and a real Redis: one round trip per stage; down -> each set's store_failure_mode)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.kits import jwt_kit
from tests.kits.door_kit import Ask, ask_grpc, ask_http
from tests.kits.limits_kit import (
    Limited,
    limited,
)
from tests.kits.metrics_kit import scrape, value
from tests.kits.redis_procs import RedisProcess

pytestmark = pytest.mark.integration


@pytest.fixture
def memory(tmp_path: Path) -> Iterator[Limited]:
    with limited(tmp_path) as running:
        yield running


def both(lim: Limited, ask: Ask) -> tuple[object, object]:
    return ask_grpc(lim.client, ask), ask_http(lim.http, ask)


def test_a_free_subject_gets_429_after_three_whichever_door_it_comes_through(
    memory: Limited
) -> None:
    headers = memory.bearer(sub="free-1")
    grpc_ok = ask_grpc(memory.client, Ask(headers=headers, source_address="10.0.0.1"))
    http_ok = ask_http(memory.http, Ask(headers=headers, source_address="10.0.0.1"))
    assert (grpc_ok.status, http_ok.status) == (200, 200)
    # Allowed answers carry the most restrictive limit for the client, as Envoy's filter does.
    assert grpc_ok.client_headers["x-ratelimit-remaining"] == "2"
    assert http_ok.client_headers["x-ratelimit-remaining"] == "1"
    assert http_ok.client_headers["x-ratelimit-limit"] == '3, 30;w=60, 3;w=60;name="free"'
    assert ask_grpc(memory.client, Ask(headers=headers)).status == 200
    for reply in both(memory, Ask(headers=headers)):
        assert reply.status == 429  # type: ignore[attr-defined]
        assert reply.body == {"error": "rate_limited",  # type: ignore[attr-defined]
                              "error_description": "rate limit exceeded", "request_id": "rid-1"}
        seen = reply.headers  # type: ignore[attr-defined]
        assert 1 <= int(seen["retry-after"]) <= 60
        assert seen["x-ratelimit-remaining"] == "0"
        assert seen["x-ratelimit-limit"].startswith("3, ")
    # Per subject: another free caller passes; a gold one has its own, larger limit.
    assert ask_http(memory.http, Ask(headers=memory.bearer(sub="free-2"))).status == 200
    gold = memory.bearer(sub="gold-1", plan="gold")
    assert [ask_http(memory.http, Ask(headers=gold)).status for _ in range(5)] == [200] * 5
    assert memory.metric("tollgate_authz_rate_limit_decisions_total", limit_set="per-plan",
                         outcome="over_limit") == 2
    assert memory.metric("tollgate_authz_decisions_total", decision="deny",
                         code="rate_limited", route="orders") == 2
    # The same counts under envoyproxy/ratelimit's names: its dashboards work on authz too.
    samples = scrape(memory.metrics_port)
    free = {"domain": "api", "key1": "plan", "key2": "subject"}
    assert value(samples, "ratelimit_service_rate_limit_over_limit", free) == 2
    assert (value(samples, "ratelimit_service_rate_limit_total_hits", free) or 0) >= 5
    assert value(samples, "ratelimit_service_config_load_success") == 1


def test_the_limit_before_authentication_holds_back_a_forged_token_flood(
    memory: Limited
) -> None:
    forged = {"authorization": "Bearer " + jwt_kit.mint(jwt_kit.rsa_key("lim-1"), sub="x")}
    attacker = "203.0.113.7"
    codes = []
    for i in range(31):
        ask = Ask(headers=forged, source_address=attacker)
        reply = ask_grpc(memory.client, ask) if i % 2 else ask_http(memory.http, ask)
        codes.append(reply.code)
    # 30 a minute from this address: the 31st is refused before its token is looked at.
    assert codes == ["invalid_token"] * 30 + ["rate_limited"]
    good = memory.bearer(sub="victim-of-shared-nat")
    assert ask_http(memory.http, Ask(headers=good, source_address=attacker)).code == "rate_limited"
    assert ask_http(memory.http, Ask(headers=forged, source_address="198.51.100.1")
                    ).code == "invalid_token"


def test_a_shadow_set_allows_and_counts(memory: Limited) -> None:
    headers = memory.bearer(sub="trial-1")
    replies = [ask_http(memory.http, Ask(path="/trial", headers=headers)) for _ in range(3)]
    assert [r.status for r in replies] == [200, 200, 200]
    assert memory.metric("tollgate_authz_rate_limit_decisions_total", limit_set="trial",
                         outcome="shadowed") == 2


def test_ietf_headers_on_request(tmp_path: Path) -> None:
    with limited(tmp_path, headers="ietf") as lim:
        reply = ask_http(lim.http, Ask(headers=lim.bearer(sub="ietf-1")))
        assert reply.client_headers == {
            "ratelimit-policy": '"30-per-minute";q=30;w=60, "free";q=3;w=60',
            "ratelimit": '"free";r=2;t=' + reply.client_headers["ratelimit"].rsplit("=", 1)[1],
        }


def test_on_redis_replicas_share_counts_in_one_round_trip_per_stage(
    tmp_path: Path, redis_server: RedisProcess
) -> None:
    key = jwt_kit.rsa_key("shared")
    with limited(tmp_path / "a", redis_url=redis_server.url, key=key) as one, \
            limited(tmp_path / "b", redis_url=redis_server.url, key=key) as two:
        headers = one.bearer(sub="shared-1")
        before = redis_server.command_calls()
        statuses = [ask_http(one.http, Ask("GET", "/strict", headers)).status,
                    ask_grpc(two.client, Ask("GET", "/strict", headers)).status,
                    ask_http(two.http, Ask("GET", "/strict", headers)).status,
                    ask_grpc(one.client, Ask("GET", "/strict", headers)).status]
        after = redis_server.command_calls()
    # /strict: one after_authz stage with two sets: one EVALSHA per request (and one EVAL
    # per process the first time the script is not yet cached there).
    scripts = sum(after.get(c, 0) - before.get(c, 0) for c in ("evalsha", "eval"))
    assert after.get("evalsha", 0) - before.get("evalsha", 0) == 4
    assert scripts <= 6
    # The strict tier allows 1 a minute, shared by both processes.
    assert statuses == [200, 429, 429, 429]


def test_leased_replicas_never_pass_a_limit_and_spare_most_round_trips(
    tmp_path: Path, redis_server: RedisProcess
) -> None:
    key = jwt_kit.rsa_key("leased")
    with limited(tmp_path / "a", redis_url=redis_server.url, key=key, lease_hits=50) as one, \
            limited(tmp_path / "b", redis_url=redis_server.url, key=key, lease_hits=50) as two:
        gold = one.bearer(sub="gold-leased", plan="gold")  # 100 a minute: blocks of 10
        before = redis_server.command_calls()
        statuses = [ask_http((one, two)[i % 2].http,
                             Ask(headers=gold, source_address=f"10.9.0.{i % 10}")).status
                    for i in range(120)]
        after = redis_server.command_calls()
    allowed = statuses.count(200)
    # Never more than the limit; a replica's unused reservation is lost to the other only.
    assert 100 - 9 <= allowed <= 100, statuses
    assert set(statuses) == {200, 429}
    # Two stages per request (per address, then per plan): 240 script calls unleased.
    scripts = sum(after.get(c, 0) - before.get(c, 0) for c in ("evalsha", "eval"))
    assert scripts <= 120, scripts


def test_redis_down_applies_each_sets_store_failure_mode(
    tmp_path: Path, redis_server: RedisProcess
) -> None:
    with limited(tmp_path, redis_url=redis_server.url) as lim:
        headers = lim.bearer(sub="outage-1")
        assert ask_http(lim.http, Ask("GET", "/orders", headers)).status == 200
        samples = scrape(lim.metrics_port)
        trips = value(samples, "tollgate_store_round_trip_seconds_count") or 0
        assert trips >= 1, "the Redis round trip is timed"
        assert value(samples, "tollgate_store_errors_total", {"store": "redis"}) == 0
        redis_server.stop()
        # orders: every set says allow -> allowed (and counted as failed open)
        for reply in both(lim, Ask("GET", "/orders", headers)):
            assert reply.status == 200  # type: ignore[attr-defined]
            assert "x-ratelimit-limit" not in reply.client_headers  # type: ignore[attr-defined]
        # strict: one set says deny -> 503, never an allow
        for reply in both(lim, Ask("GET", "/strict", headers)):
            assert reply.status == 503  # type: ignore[attr-defined]
            assert reply.code == "rate_limit_unavailable"  # type: ignore[attr-defined]
        assert lim.metric("tollgate_authz_rate_limit_decisions_total", limit_set="per-plan",
                          outcome="store_failed_open") >= 2
        assert lim.metric("tollgate_authz_rate_limit_decisions_total",
                          limit_set="strict-when-down", outcome="store_failed_closed") == 2
        assert (value(scrape(lim.metrics_port), "tollgate_store_errors_total", {"store": "redis"})
                or 0) >= 4, "each failed Redis call is counted"
