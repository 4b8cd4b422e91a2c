"""The HTTP door: Envoy's ext_authz `http_service` (and NGINX auth_request, Traefik
forwardAuth) on tollgate.http_server, deciding with the same pipeline as gRPC.

Paths under `path_prefix` are checks; `/healthz` answers liveness and `/ready`
readiness (503, naming what blocks it: a JWT source without usable keys yet, the
drain), for probes that speak HTTP. A decision that needs
no I/O is answered in the same loop turn (tollgate.eager); a cached token's allow
is rendered once per route and its bytes kept.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from opentelemetry.propagate import extract
from opentelemetry.trace import Span, SpanKind, Tracer

from authz_service.doors.forwarded import Forwarding, ForwardRefused
from authz_service.doors.http_wire import AnswerRenderer, NotACheck, to_context
from authz_service.doors.spans import record_answer, record_unavailable
from authz_service.models import Answer, Deny
from authz_service.pipeline import CheckUnavailable, Pipeline
from tollgate.eager import start
from tollgate.health_http import health_response
from tollgate.http_server import HttpRequest, Response, simple_response

DEFAULT_PATH_PREFIX = "/check"
_UNAVAILABLE = simple_response(503, b"authorization unavailable")
_NOT_FOUND = simple_response(404, b'{"error":"not_found","error_description":"not a check '
                             b'path"}', "application/json")


class HttpCheckDoor:
    def __init__(
        self,
        pipeline: Pipeline,
        *,
        path_prefix: str = DEFAULT_PATH_PREFIX,
        blockers: Callable[[], dict[str, str]] = dict,
        forwarding: Forwarding | None = None,
        tracer: Tracer | None = None,
    ) -> None:
        """`blockers`: what keeps the service from being ready, by name (none: ready).
        `forwarding`: checks come from NGINX or Traefik (doors/forwarded.py), not Envoy.
        `tracer`: a span per check, a child of the one Envoy sent (`traceparent`)."""
        if not path_prefix.startswith("/") or path_prefix.endswith("/"):
            raise ValueError(f"path prefix '{path_prefix}' must start with '/' and not end "
                             "with one (e.g. /check)")
        self.pipeline = pipeline
        self.path_prefix = path_prefix
        self.blockers = blockers
        # Chosen once: the Envoy door's per-request path has no forwarded-mode branch.
        self._context = to_context if forwarding is None else forwarding.context
        self.answers = AnswerRenderer(deny=None if forwarding is None else forwarding.deny)
        self.tracer = tracer

    def __call__(self, request: HttpRequest) -> Response:
        if self.tracer is not None:
            return self._traced(request, self.tracer)
        try:
            ctx = self._context(request, self.path_prefix)
        except NotACheck:
            return self._other(request)
        except ForwardRefused as refused:
            return refused.response
        head_only = request.method == "HEAD"
        try:
            outcome = start(self.pipeline.decide(ctx))
        except CheckUnavailable:
            return _UNAVAILABLE
        if isinstance(outcome, Answer):
            return self.answers.render(outcome, ctx.request_id, head_only=head_only)
        return self._later(outcome, ctx.request_id, head_only)

    def _traced(self, request: HttpRequest, tracer: Tracer) -> Response:
        """__call__ with a span around the decision (ended when the answer is known)."""
        try:
            ctx = self._context(request, self.path_prefix)
        except NotACheck:
            return self._other(request)
        except ForwardRefused as refused:
            return refused.response
        span = tracer.start_span(
            f"{request.method} {self.path_prefix}", context=extract(dict(request.headers)),
            kind=SpanKind.SERVER, attributes={
                "http.request.method": request.method, "http.route": self.path_prefix,
                "url.path": request.target.partition("?")[0]},
        )
        head_only = request.method == "HEAD"
        try:
            outcome = start(self.pipeline.decide(ctx))
        except CheckUnavailable:
            _end(span, None, 503)
            return _UNAVAILABLE
        if isinstance(outcome, Answer):
            _end(span, outcome, _status(outcome))
            return self.answers.render(outcome, ctx.request_id, head_only=head_only)

        def done(finished: asyncio.Task[Answer]) -> None:
            if finished.cancelled() or finished.exception() is not None:
                _end(span, None, 503)
            else:
                answer = finished.result()
                _end(span, answer, _status(answer))

        outcome.add_done_callback(done)
        return self._later(outcome, ctx.request_id, head_only)

    def _later(
        self, task: asyncio.Task[Answer], request_id: str, head_only: bool
    ) -> asyncio.Future[bytes]:
        """The bytes once the task that carries the decision finishes: a plain future
        fed by a callback, not one more coroutine and task per waiting check."""
        rendered: asyncio.Future[bytes] = task.get_loop().create_future()

        def done(finished: asyncio.Task[Answer]) -> None:
            if rendered.done():  # the connection went away and cancelled it
                return
            if finished.cancelled():
                rendered.cancel()
                return
            error = finished.exception()
            if isinstance(error, CheckUnavailable):
                rendered.set_result(_UNAVAILABLE)
            elif error is not None:
                rendered.set_exception(error)
            else:
                rendered.set_result(
                    self.answers.render(finished.result(), request_id, head_only=head_only))

        task.add_done_callback(done)
        return rendered

    def _other(self, request: HttpRequest) -> bytes:
        answer = health_response(request, self.blockers)
        return answer if answer is not None else _NOT_FOUND


def _status(answer: Answer) -> int:
    decision = answer.decision
    return decision.status if isinstance(decision, Deny) else 200


def _end(span: Span, answer: Answer | None, status: int) -> None:
    span.set_attribute("http.response.status_code", status)
    if answer is None:
        record_unavailable(span)
    else:
        record_answer(span, answer)
    span.end()
