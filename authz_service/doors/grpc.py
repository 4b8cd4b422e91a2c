"""The gRPC door: Envoy's ext_authz Check (envoy.service.auth.v3) on the pipeline.

CheckRequest -> RequestContext (adapter) -> Pipeline.decide -> CheckResponse bytes
(adapter). A cached token's Allow is encoded once and its bytes kept; the
per-request rate-limit headers are appended as bytes protobuf merges.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import grpc
from envoy.service.auth.v3 import external_auth_pb2
from opentelemetry.trace import SpanKind, Tracer

from authz_service.doors.grpc_wire import AnswerEncoder, to_context
from authz_service.doors.spans import record_answer, record_unavailable
from authz_service.pipeline import CheckUnavailable, Pipeline
from tollgate.server import ServiceSpec
from tollgate.tracing import parent_context

SERVICE_NAME = external_auth_pb2.DESCRIPTOR.services_by_name["Authorization"].full_name
SPAN_NAME = f"{SERVICE_NAME}/Check"  # OpenTelemetry's RPC span name: {service}/{method}
RPC_ATTRIBUTES = {"rpc.system": "grpc", "rpc.service": SERVICE_NAME, "rpc.method": "Check"}


class AuthorizationService:
    def __init__(self, pipeline: Pipeline, tracer: Tracer | None = None) -> None:
        self.pipeline = pipeline
        self.tracer = tracer
        self.answers = AnswerEncoder()

    async def Check(
        self,
        request: external_auth_pb2.CheckRequest,
        context: grpc.aio.ServicerContext[object, object],
    ) -> bytes:
        # The trace context only the decision log reads: looked up only when it is on.
        trace = _trace_header(context.invocation_metadata()) \
            if self.pipeline.decision_log is not None else ""
        ctx = to_context(request, trace)
        try:
            if self.tracer is None:
                answer = await self.pipeline.decide(ctx)
            else:
                parent = parent_context(context.invocation_metadata())
                with self.tracer.start_as_current_span(
                    SPAN_NAME, context=parent, kind=SpanKind.SERVER, attributes=RPC_ATTRIBUTES,
                    record_exception=False, set_status_on_exception=False,
                ) as span:
                    try:
                        answer = await self.pipeline.decide(ctx)
                    except CheckUnavailable:
                        record_unavailable(span)
                        span.set_attribute("rpc.grpc.status_code", grpc.StatusCode.UNAVAILABLE
                                           .value[0])
                        raise
                    span.set_attribute("rpc.grpc.status_code", 0)
                    record_answer(span, answer)
        except CheckUnavailable:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "authorization unavailable")
        return self.answers.encode(answer, ctx.request_id)


def service_spec(service: AuthorizationService) -> ServiceSpec:
    """Check answers are serialized by the adapter (and kept for cached tokens), so
    the method is registered with a serializer that passes bytes through."""
    handler = grpc.unary_unary_rpc_method_handler(
        service.Check,
        request_deserializer=external_auth_pb2.CheckRequest.FromString,
        response_serializer=_as_bytes,
    )
    generic = grpc.method_handlers_generic_handler(SERVICE_NAME, {"Check": handler})
    return ServiceSpec(SERVICE_NAME, lambda server: server.add_generic_rpc_handlers((generic,)))


def _trace_header(metadata: Iterable[tuple[str, Any]] | None) -> str:
    """Envoy's trace context on this call: W3C `traceparent`, else a B3 header."""
    found = {key: value for key, value in metadata or () if key in _TRACE_KEYS}
    return next((str(found[key]) for key in _TRACE_KEYS if key in found), "")


_TRACE_KEYS = ("traceparent", "b3", "x-b3-traceid")


def _as_bytes(response: bytes) -> bytes:
    return response
