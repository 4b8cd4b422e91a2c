"""The grpc.aio servicer: adapter -> RateLimiter -> adapter, errors mapped in one place."""

from __future__ import annotations

import logging

import grpc
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc

from ratelimit_service.adapter import to_query, to_response
from ratelimit_service.decision import RequestError
from ratelimit_service.limiter import RateLimiter
from ratelimit_service.stores import StoreUnavailable
from tollgate.server import ServiceSpec

log = logging.getLogger("ratelimit_service")

SERVICE_NAME = rls_pb2.DESCRIPTOR.services_by_name["RateLimitService"].full_name


class RateLimitServicer(rls_pb2_grpc.RateLimitServiceServicer):  # type: ignore[misc]
    """envoy.service.ratelimit.v3.RateLimitService."""

    def __init__(self, limiter: RateLimiter) -> None:
        self.limiter = limiter

    async def ShouldRateLimit(
        self, request: rls_pb2.RateLimitRequest, context: grpc.aio.ServicerContext
    ) -> rls_pb2.RateLimitResponse:
        try:
            decision = await self.limiter.should_rate_limit(to_query(request))
        except RequestError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except StoreUnavailable:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "rate-limit store unavailable")
        except Exception:
            log.exception("ShouldRateLimit failed")
            await context.abort(grpc.StatusCode.INTERNAL, "internal error")
        return to_response(decision)


def service_spec(limiter: RateLimiter) -> ServiceSpec:
    servicer = RateLimitServicer(limiter)
    return ServiceSpec(
        SERVICE_NAME, lambda server: rls_pb2_grpc.add_RateLimitServiceServicer_to_server(
            servicer, server
        )
    )
