"""What a door's span says about a Check, for both doors (only when tracing is on).

Names and attributes follow the OpenTelemetry semantic conventions where one exists:
an RPC span is `{rpc.service}/{rpc.method}` with `rpc.system`, `rpc.service`,
`rpc.method` and `rpc.grpc.status_code`; the HTTP door's span is `{method} {prefix}`
with `http.request.method`, `url.path`, `http.route` and `http.response.status_code`.
The decision itself is under `tollgate.*` (no convention covers it): `decision`,
`code` (the stable error code, `ok` on allow), `route` and the proven identity's
`identity.kind` and `identity.source` (never a credential, never the subject).
"""

from __future__ import annotations

from opentelemetry.trace import Span, StatusCode

from authz_service.models import Answer, Deny


def record_answer(span: Span, answer: Answer) -> None:
    decision = answer.decision
    denied = isinstance(decision, Deny)
    code = decision.code if isinstance(decision, Deny) else "ok"
    span.set_attribute("tollgate.decision", "deny" if denied else "allow")
    span.set_attribute("tollgate.code", code)
    span.set_attribute("tollgate.route", decision.route)
    if answer.identity is not None:
        span.set_attribute("tollgate.identity.kind", answer.identity.kind)
        span.set_attribute("tollgate.identity.source", answer.identity.source)
    if isinstance(decision, Deny) and decision.status >= 500:
        # Semantic conventions: a server span is an error on a 5xx only; a 401/403 is
        # the service doing its job.
        span.set_status(StatusCode.ERROR, code)
        span.set_attribute("error.type", code)


def record_unavailable(span: Span) -> None:
    span.set_status(StatusCode.ERROR, "unavailable")
    span.set_attribute("error.type", "unavailable")
