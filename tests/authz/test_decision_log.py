"""The decision record: which decisions are recorded, and what a record says and never says.

Records are built from neutral requests and answers, in this process (no server)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest

from authz_service.claims import ClaimPathError
from authz_service.cli import build_parser, decision_log
from authz_service.decision_log import (
    DecisionLog,
    DecisionLogSettings,
    Pending,
    parse_claims,
    trace_id_of,
)
from authz_service.keys.registry import KeyRegistry
from authz_service.models import Allow, Answer, Deny, Identity, RequestContext
from authz_service.pipeline import CheckUnavailable, Pipeline
from authz_service.policy import engine
from authz_service.policy.loading import load_policy
from authz_service.settings import AuthzSettings
from tollgate.reload import ConfigHolder
from tollgate.settings import SettingsError

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
WHEN = 1_796_183_845.123  # 2026-12-02T03:57:25.123Z

ALICE = Identity(kind="jwt", subject="alice", source="corp-idp", scopes=frozenset({"a"}),
                 claims=MappingProxyType({"sub": "alice", "email": "a@x.test",
                                          "realm_access": {"roles": ["admin", "ops"]},
                                          "scope": "a"}),
                 issuer="https://login.example.com/", plan="gold")
BILLING = Identity(kind="api_key", subject="svc-billing", source="partners",
                   claims=MappingProxyType({"roles": [], "key_id": "billing"}))
WORKER = Identity(kind="mtls", subject="worker", source="mesh",
                  claims=MappingProxyType({"spiffe_id": "spiffe://prod/ns/a/sa/worker"}))


def allow(identity: Identity = ALICE, route: str = "orders-read") -> Answer:
    return Answer(Allow(identity, route), identity=identity)


def deny(code: str = "invalid_token", status: int = 401, identity: Identity | None = None,
         **answer: Any) -> Answer:
    return Answer(Deny(status, code, "why", route="orders-read"), identity=identity, **answer)


def request(**fields: Any) -> RequestContext:
    values: dict[str, Any] = {"method": "GET", "path": "/orders/42", "request_id": "rid-7",
                              "source_address": "203.0.113.9"}
    values.update(fields)
    return RequestContext(**values)


class Collected:
    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    def write(self, records: Sequence[dict[str, Any]]) -> None:
        self.records.extend(records)

    def close(self) -> None:
        pass


def sequence(*values: float) -> Iterator[float]:
    yield from values


def recorded(dlog: DecisionLog, ctx: RequestContext, answer: Answer,
             seconds: float = 0.000125) -> dict[str, Any] | None:
    item: Pending | None = dlog.pending(ctx, answer, seconds)
    return None if item is None else dlog.render(item)


def log_with(**settings: Any) -> DecisionLog:
    return DecisionLog(DecisionLogSettings(**settings), clock=lambda: WHEN)


def test_an_allow_record_names_who_did_what_where_and_how_it_was_decided() -> None:
    ctx = request(headers=MappingProxyType({"traceparent": f"00-{TRACE}-00f067aa0ba902b7-01"}))
    answer = allow()
    answer.limit_outcomes = (("per-address", "ok"), ("per-plan", "ok"))
    assert recorded(log_with(), ctx, answer) == {
        "time": "2026-12-02T03:57:25.123Z", "request_id": "rid-7", "trace_id": TRACE,
        "route": "orders-read", "decision": "allow", "code": "ok", "status": 200,
        "identity_kind": "jwt", "identity_source": "corp-idp", "subject": "alice",
        "issuer": "https://login.example.com/", "method": "GET", "path": "/orders/42",
        "client_address": "203.0.113.9",
        "rate_limits": [{"set": "per-address", "outcome": "ok"},
                        {"set": "per-plan", "outcome": "ok"}],
        "duration_ms": 0.125,
    }


def test_a_denial_before_any_identity_has_no_identity_fields() -> None:
    record = recorded(log_with(), request(), deny())
    assert record is not None
    assert {k: record[k] for k in ("decision", "code", "status", "route")} == {
        "decision": "deny", "code": "invalid_token", "status": 401, "route": "orders-read"}
    assert not {"identity_kind", "subject", "issuer", "trace_id"} & record.keys()


def test_a_429_says_which_set_was_over_and_who_was_proven() -> None:
    answer = deny("rate_limited", 429, identity=ALICE,
                  limit_outcomes=(("per-address", "ok"), ("per-plan", "over_limit")))
    record = recorded(log_with(), request(), answer)
    assert record is not None and record["code"] == "rate_limited" and record["status"] == 429
    assert record["subject"] == "alice"
    assert record["rate_limits"][-1] == {"set": "per-plan", "outcome": "over_limit"}


def test_a_shadowed_denial_is_recorded_beside_the_allow() -> None:
    answer = allow()
    answer.shadowed = Deny(403, "insufficient_scope", "x", route="orders-read")
    record = recorded(log_with(), request(), answer)
    assert record is not None
    assert record["shadowed"] == {"code": "insufficient_scope", "status": 403}


@pytest.mark.parametrize(("identity", "field", "value"), [
    (ALICE, "issuer", "https://login.example.com/"),
    (BILLING, "api_key_id", "billing"),
    (WORKER, "spiffe_id", "spiffe://prod/ns/a/sa/worker"),
])
def test_each_kind_names_its_issuer_key_id_or_spiffe_id(
    identity: Identity, field: str, value: str
) -> None:
    record = recorded(log_with(), request(), allow(identity))
    assert record is not None and record[field] == value
    others = {"issuer", "api_key_id", "spiffe_id"} - {field}
    assert not others & record.keys()


def test_a_tokens_own_key_id_or_spiffe_id_claim_is_not_taken_for_a_key_or_peer() -> None:
    forged = Identity(kind="jwt", subject="mallory", source="corp-idp", issuer="https://i/",
                      claims=MappingProxyType({"key_id": "billing", "spiffe_id": "spiffe://x"}))
    record = recorded(log_with(), request(), allow(forged))
    assert record is not None and not {"api_key_id", "spiffe_id"} & record.keys()


def test_the_query_is_stripped_by_default_and_kept_when_asked() -> None:
    ctx = request(query="access_token=SECRET&page=2")
    stripped = recorded(log_with(), ctx, deny())
    kept = recorded(log_with(keep_query=True), ctx, deny())
    assert stripped is not None and stripped["path"] == "/orders/42"
    assert "SECRET" not in repr(stripped)
    assert kept is not None and kept["path"] == "/orders/42?access_token=SECRET&page=2"


def test_claims_appear_only_when_listed() -> None:
    unlisted = recorded(log_with(), request(), allow())
    listed = recorded(log_with(claims=parse_claims("email, realm_access.roles, missing")),
                      request(), allow())
    assert unlisted is not None and "claims" not in unlisted
    assert "a@x.test" not in repr(unlisted)
    assert listed is not None
    assert listed["claims"] == {"email": "a@x.test", "realm_access.roles": ["admin", "ops"]}


def test_a_bad_claim_path_is_refused_naming_it() -> None:
    with pytest.raises(ClaimPathError):
        parse_claims("email,realm_access..roles")


def test_allows_are_sampled_and_denials_always_recorded() -> None:
    draws = sequence(0.05, 0.95, 0.2, 0.3)
    dlog = DecisionLog(DecisionLogSettings(allow_sample_rate=0.25),
                       sample=lambda: next(draws))
    kept = [dlog.pending(request(), allow(), 0.0) is not None for _ in range(4)]
    assert kept == [True, False, True, False]
    assert all(dlog.pending(request(), deny(), 0.0) is not None for _ in range(10))  # no draw


def test_a_rate_of_zero_records_no_allow_and_one_records_every_allow() -> None:
    def never() -> float:
        raise AssertionError("no draw at rate 0 or 1")

    none = DecisionLog(DecisionLogSettings(allow_sample_rate=0.0), sample=never)
    every = DecisionLog(DecisionLogSettings(allow_sample_rate=1.0), sample=never)
    assert none.pending(request(), allow(), 0.0) is None
    assert none.pending(request(), deny(), 0.0) is not None
    assert every.pending(request(), allow(), 0.0) is not None


@pytest.mark.parametrize("rate", [-0.1, 1.5, float("nan")])
def test_a_sample_rate_outside_0_to_1_is_refused(rate: float) -> None:
    with pytest.raises(ValueError, match=r"not within 0\.\.1"):
        DecisionLogSettings(allow_sample_rate=rate)


def test_a_full_queue_counts_each_record_it_drops() -> None:
    class Discard:
        def write(self, records: object) -> None:
            pass

        def close(self) -> None:
            pass

    dlog = DecisionLog(DecisionLogSettings(), [Discard()], max_queued=2)  # never started
    for _ in range(5):
        dlog.offer(request(), deny(), 0.0)
    assert dlog.queue is not None and dlog.queue.dropped == 3


def test_a_record_holds_no_credential_header_cookie_or_body() -> None:
    ctx = request(
        headers=MappingProxyType({"authorization": "Bearer eyJSECRET", "cookie": "sid=SECRET",
                                  "x-api-key": "tg_live_SECRET"}),
        body=b'{"password": "SECRET"}')
    record = recorded(log_with(claims=("sub",)), ctx, allow())
    assert record is not None and "SECRET" not in repr(record)


def test_the_grpc_doors_trace_context_wins_over_a_client_header() -> None:
    ctx = request(trace_parent=f"00-{TRACE}-00f067aa0ba902b7-01",
                  headers=MappingProxyType({"traceparent": f"00-{'1' * 32}-00f067aa0ba902b7-01"}))
    record = recorded(log_with(), ctx, deny())
    assert record is not None and record["trace_id"] == TRACE


@pytest.mark.parametrize(("header", "trace_id"), [
    (f"00-{TRACE}-00f067aa0ba902b7-01", TRACE),
    (f"00-{TRACE.upper()}-00f067aa0ba902b7-00", TRACE),
    (f"{TRACE}-e457b5a2e4d86bd1-1", TRACE),  # B3 single header
    ("a3ce929d0e0e4736", "0000000000000000a3ce929d0e0e4736"),  # x-b3-traceid, 64-bit
    (f"00-{'0' * 32}-00f067aa0ba902b7-01", ""),  # the invalid all-zero id
    ("00-not-hex-at-all", ""),
    (f"00-{'z' * 32}-00f067aa0ba902b7-01", ""),
    ("", ""),
])
def test_trace_ids_are_read_from_w3c_and_b3_headers(header: str, trace_id: str) -> None:
    assert trace_id_of(header) == trace_id


def test_a_long_request_id_and_path_are_clipped() -> None:
    record = recorded(log_with(), request(request_id="r" * 500, path="/" + "p" * 5000), deny())
    assert record is not None
    assert len(record["request_id"]) == 128 and len(record["path"]) == 2048


def test_each_record_has_its_own_time_to_the_millisecond() -> None:
    times = iter([WHEN, WHEN + 0.5, WHEN + 1.0, WHEN + 86_400.001])
    dlog = DecisionLog(DecisionLogSettings(), clock=lambda: next(times))
    stamps = [dlog.render(item)["time"] for item in
              [dlog.pending(request(), deny(), 0.0) for _ in range(4)] if item is not None]
    assert stamps == ["2026-12-02T03:57:25.123Z", "2026-12-02T03:57:25.623Z",
                      "2026-12-02T03:57:26.123Z", "2026-12-03T03:57:25.124Z"]


@pytest.mark.parametrize(("on_error", "status"), [("deny", 403), ("error", 503)])
def test_an_internal_error_is_recorded_as_it_was_answered(
    on_error: str, status: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "authz.yaml"
    config.write_text(f"on_error: {on_error}\nunmatched: deny\nno_routes: true\n")
    sink = Collected()
    dlog = DecisionLog(DecisionLogSettings(), [sink])  # its writer never started: drained here
    pipeline = Pipeline(ConfigHolder(load_policy(config, KeyRegistry())), KeyRegistry(),
                        decision_log=dlog)

    def broken(*_: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(engine, "route", broken)
    try:
        asyncio.run(pipeline.decide(request()))
    except CheckUnavailable:
        assert on_error == "error"
    assert dlog.queue is not None
    dlog.queue.drain()
    (record,) = sink.records
    assert (record["decision"], record["code"], record["status"]) == (
        "deny", "internal_error", status)


def test_the_flags_build_no_log_when_off_and_refuse_what_cannot_work(tmp_path: Path) -> None:
    def built(*flags: str) -> DecisionLog | None:
        return decision_log(AuthzSettings.from_args(build_parser().parse_args(flags)).decision_log)

    assert built() is None  # off by default: nothing on the hot path
    on = built("--decision-log", str(tmp_path / "d.jsonl"), "--decision-log-claims", "email",
               "--decision-log-allow-sample-rate", "0.5")
    assert on is not None and on.queue is not None and on.rate == 0.5
    on.queue.close()
    with pytest.raises(OSError):
        built("--decision-log", str(tmp_path / "missing" / "d.jsonl"))
    with pytest.raises(SettingsError, match=r"^--decision-log-claims: .*a\.\.b"):
        built("--decision-log", "stdout", "--decision-log-claims", "a..b")
    with pytest.raises(SettingsError, match=r"^--decision-log-allow-sample-rate: .*0\.\.1"):
        built("--decision-log", "stdout", "--decision-log-allow-sample-rate", "2")
    with pytest.raises(SettingsError, match=r"^--decision-log-queue 0: at least 1"):
        built("--decision-log", "stdout", "--decision-log-queue", "0")
