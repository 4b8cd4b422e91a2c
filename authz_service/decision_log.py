"""The decision log: one structured record per decision, for audit and on-call.

Every denial is recorded; allows are sampled (`allow_sample_rate`). The pipeline calls
`offer` once per decision, whatever the door: that takes the few values a record needs
into a tuple and queues it (tollgate.record_log); the record itself is built and
written off the hot path, on the writer thread.

A record never holds a credential or a body: only the names below, the path without
its query (unless `keep_query`), and the claims the operator listed by path.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from authz_service.claims import ClaimPath, parse_claim_path
from authz_service.identity.naming import named_credential
from authz_service.models import Allow, Answer, Identity, RequestContext
from tollgate.record_log import Record, RecordQueue, RecordSink

MAX_PATH = 2048
MAX_REQUEST_ID = 128  # as much as a denial body echoes
MAX_CLAIM_TEXT = 256
_HEX = frozenset("0123456789abcdef")


@dataclass(frozen=True)
class DecisionLogSettings:
    """What the operator chose (flags, read once at start)."""

    allow_sample_rate: float = 1.0
    claims: tuple[str, ...] = ()  # claim paths copied into each record (`claims.<path>`)
    keep_query: bool = False  # the query string can carry secrets: stripped by default

    def __post_init__(self) -> None:
        if not 0.0 <= self.allow_sample_rate <= 1.0:
            raise ValueError(f"allow sample rate {self.allow_sample_rate} is not within 0..1")


# What the hot path keeps per decision: a flat tuple, no copy of headers or body.
Pending = tuple[float, float, str, str, str, str, str, str, Answer]


class DecisionLog:
    def __init__(
        self,
        settings: DecisionLogSettings,
        sinks: Sequence[RecordSink] = (),
        *,
        max_queued: int = 10_000,
        sample: Callable[[], float] = random.random,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """No sinks: records are only built on demand (tests, benchmarks)."""
        self.settings = settings
        self.queue: RecordQueue[Pending] | None = RecordQueue(
            self.render, sinks, max_queued=max_queued) if sinks else None
        self.rate = settings.allow_sample_rate
        self.sample = sample
        self.clock = clock
        self.claims: tuple[ClaimPath, ...] = tuple(parse_claim_path(c) for c in settings.claims)
        self._second: tuple[int, str] = (-1, "")

    def pending(self, ctx: RequestContext, answer: Answer, seconds: float) -> Pending | None:
        """The tuple to queue for this decision, or None when a sampled-out allow."""
        if answer.decision.__class__ is Allow:
            rate = self.rate
            if rate < 1.0 and (rate <= 0.0 or self.sample() >= rate):
                return None
        headers = ctx.headers
        trace = ctx.trace_parent or headers.get("traceparent") or headers.get("b3") \
            or headers.get("x-b3-traceid") or ""
        return (self.clock(), seconds, ctx.request_id, trace, ctx.method, ctx.path,
                ctx.query if self.settings.keep_query else "", ctx.source_address, answer)

    def offer(self, ctx: RequestContext, answer: Answer, seconds: float) -> None:
        """Queue this decision's record (the hot path's only decision-log work)."""
        if self.queue is None:
            return
        item = self.pending(ctx, answer, seconds)
        if item is not None:
            self.queue.offer(item)

    def render(self, item: Pending) -> Record:
        """The record of one decision (on the writer thread)."""
        when, seconds, request_id, trace, method, path, query, address, answer = item
        decision = answer.decision
        record: Record = {"time": self._time(when)}
        if request_id:
            record["request_id"] = request_id[:MAX_REQUEST_ID]
        trace_id = trace_id_of(trace)
        if trace_id:
            record["trace_id"] = trace_id
        record["route"] = decision.route
        identity: Identity | None
        if isinstance(decision, Allow):
            record.update(decision="allow", code="ok", status=200)
            identity = answer.identity or decision.identity
        else:
            record.update(decision="deny", code=decision.code, status=decision.status)
            identity = answer.identity
        if identity is not None:
            record["identity_kind"] = identity.kind
            record["identity_source"] = identity.source
            record["subject"] = identity.subject
            if identity.issuer:
                record["issuer"] = identity.issuer
            # Read by kind (identity.naming): a token's `key_id` claim names no key.
            named = named_credential(identity)
            if named is not None:
                record[named[0]] = named[1]
            listed = self._claims(identity.claims)
            if listed:
                record["claims"] = listed
        record["method"] = method
        record["path"] = (f"{path}?{query}" if query else path)[:MAX_PATH]
        if address:
            record["client_address"] = address
        if answer.limit_outcomes:
            record["rate_limits"] = [{"set": name, "outcome": outcome}
                                     for name, outcome in answer.limit_outcomes]
        if answer.shadowed is not None:
            record["shadowed"] = {"code": answer.shadowed.code, "status": answer.shadowed.status}
        record["duration_ms"] = round(seconds * 1000.0, 3)
        return record

    def _time(self, when: float) -> str:
        """RFC 3339, UTC, milliseconds; the formatted second is kept (the writer thread
        renders many records a second, and strftime is a third of a record's cost)."""
        seconds, millis = divmod(round(when * 1000), 1000)
        if seconds != self._second[0]:
            self._second = (seconds, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)))
        return f"{self._second[1]}.{millis:03d}Z"

    def _claims(self, claims: Mapping[str, Any]) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for path in self.claims:
            value = path.read(claims)
            if value is not None:
                found[path.text] = _claim_value(value)
        return found


def _claim_value(value: Any) -> Any:
    if isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return value[:MAX_CLAIM_TEXT]
    if isinstance(value, list | tuple):
        return [_claim_value(v) for v in value[:32] if isinstance(v, str | bool | int | float)]
    return str(value)[:MAX_CLAIM_TEXT]  # an object: its text, clipped


def trace_id_of(header: str) -> str:
    """The 32-hex trace id of a W3C `traceparent`, a B3 single header or `x-b3-traceid`
    ('' when it is none of them, or the all-zero invalid id)."""
    text = header.strip().lower()
    if not text:
        return ""
    parts = text.split("-")
    if len(parts) >= 4 and len(parts[0]) == 2 and len(parts[1]) == 32:  # traceparent
        candidate = parts[1]
    else:  # b3: TRACEID-SPANID[-SAMPLED[-PARENT]], or x-b3-traceid alone
        candidate = parts[0]
        if len(candidate) == 16:
            candidate = candidate.rjust(32, "0")
    if len(candidate) != 32 or not _HEX.issuperset(candidate) or candidate == "0" * 32:
        return ""
    return candidate





def parse_claims(text: str) -> tuple[str, ...]:
    """`--decision-log-claims email,realm_access.roles` -> the paths (checked here)."""
    paths = tuple(part.strip() for part in text.split(",") if part.strip())
    for path in paths:
        parse_claim_path(path)  # raises ClaimPathError naming the problem
    return paths
