"""The grpc.aio servicer: adapter -> RateLimiter -> adapter, errors mapped in one place.

Each answer is counted (`tollgate_ratelimit_decisions{outcome}`) and timed; with a
tracer, the call gets a span that is a child of Envoy's (from the call metadata).
"""

from __future__ import annotations

import logging
import time

import grpc
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc
from opentelemetry.trace import SpanKind, Tracer

from ratelimit_service import metrics
from ratelimit_service.adapter import to_query, to_response
from ratelimit_service.decision import Code, RequestError
from ratelimit_service.limiter import RateLimiter
from ratelimit_service.stores import StoreUnavailable
from tollgate.server import ServiceSpec
from tollgate.tracing import parent_context

log = logging.getLogger("ratelimit_service")

SERVICE_NAME = rls_pb2.DESCRIPTOR.services_by_name["RateLimitService"].full_name
SPAN_NAME = f"{SERVICE_NAME}/ShouldRateLimit"
RPC_ATTRIBUTES = {"rpc.system": "grpc", "rpc.service": SERVICE_NAME,
                  "rpc.method": "ShouldRateLimit"}


class RateLimitServicer(rls_pb2_grpc.RateLimitServiceServicer):  # type: ignore[misc]
    """envoy.service.ratelimit.v3.RateLimitService."""

    def __init__(self, limiter: RateLimiter, tracer: Tracer | None = None) -> None:
        self.limiter = limiter
        self.tracer = tracer

    async def ShouldRateLimit(
        self, request: rls_pb2.RateLimitRequest, context: grpc.aio.ServicerContext
    ) -> rls_pb2.RateLimitResponse:
        if self.tracer is None:
            return await self._decide(request, context)
        parent = parent_context(context.invocation_metadata())
        # OpenTelemetry's RPC conventions: `{rpc.service}/{rpc.method}` and rpc.* attributes.
        with self.tracer.start_as_current_span(
            SPAN_NAME, context=parent, kind=SpanKind.SERVER, attributes=RPC_ATTRIBUTES,
        ) as span:
            span.set_attribute("tollgate.domain", request.domain)
            # An abort (invalid request, store down, a bug) ends the span as an error
            # with its exception recorded, by the context manager.
            response = await self._decide(request, context)
            span.set_attribute("rpc.grpc.status_code", 0)
            span.set_attribute(
                "tollgate.code", "over_limit" if response.overall_code == Code.OVER_LIMIT else "ok"
            )
            return response

    async def _decide(
        self, request: rls_pb2.RateLimitRequest, context: grpc.aio.ServicerContext
    ) -> rls_pb2.RateLimitResponse:
        started = time.perf_counter()
        try:
            decision = await self.limiter.should_rate_limit(to_query(request))
            response = to_response(decision)
        except RequestError as exc:
            metrics.INVALID.inc()
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except StoreUnavailable:
            metrics.UNAVAILABLE.inc()
            await context.abort(grpc.StatusCode.UNAVAILABLE, "rate-limit store unavailable")
        except Exception:
            metrics.INTERNAL.inc()
            log.exception("ShouldRateLimit failed")
            await context.abort(grpc.StatusCode.INTERNAL, "internal error")
        metrics.DECISION_SECONDS.observe(time.perf_counter() - started)
        if decision.failed_open:
            metrics.FAILED_OPEN.inc()
        elif decision.overall_code is Code.OVER_LIMIT:
            metrics.OVER_LIMIT.inc()
        else:
            metrics.OK.inc()
        return response


def service_spec(limiter: RateLimiter, tracer: Tracer | None = None) -> ServiceSpec:
    servicer = RateLimitServicer(limiter, tracer)
    return ServiceSpec(
        SERVICE_NAME, lambda server: rls_pb2_grpc.add_RateLimitServiceServicer_to_server(
            servicer, server
        )
    )
