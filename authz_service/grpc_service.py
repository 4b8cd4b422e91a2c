"""The gRPC Check handler: adapter in, engine, adapter out, failing closed."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import grpc
from envoy.service.auth.v3 import external_auth_pb2
from opentelemetry.trace import Span, SpanKind, Tracer
from prometheus_client import Counter

from authz_service.adapter import response_bytes, to_context
from authz_service.compiled import CompiledPolicy, compile_config
from authz_service.config import AuthzConfig
from authz_service.denials import internal_error
from authz_service.engine import NeedKeys, decide
from authz_service.key_registry import KeyRegistry
from authz_service.metrics import CHECK_SECONDS, DECISIONS
from authz_service.models import Deny
from tollgate.config import load_config_file
from tollgate.reload import ConfigHolder
from tollgate.server import ServiceSpec
from tollgate.tracing import parent_context

log = logging.getLogger("authz.service")
SERVICE_NAME = external_auth_pb2.DESCRIPTOR.services_by_name["Authorization"].full_name


def load_policy(path: str | Path, keys: KeyRegistry) -> CompiledPolicy:
    """Read, validate and compile a config file; ConfigError names file and line."""
    path = Path(path)
    factory = keys.factory(path.parent)

    def build(data: object) -> CompiledPolicy:
        return compile_config(AuthzConfig.model_validate(data), factory, path.parent)

    policy = load_config_file(path, build)
    keys.activate(factory.built)
    return policy


class AuthorizationService:
    def __init__(
        self,
        holder: ConfigHolder[CompiledPolicy],
        keys: KeyRegistry,
        clock: Callable[[], float] = time.time,
        tracer: Tracer | None = None,
    ) -> None:
        self.holder = holder
        self.keys = keys
        self.clock = clock
        self.tracer = tracer
        self._counters: dict[tuple[str, str, str], Counter] = {}

    async def Check(
        self,
        request: external_auth_pb2.CheckRequest,
        context: grpc.aio.ServicerContext[object, object],
    ) -> bytes:
        if self.tracer is None:
            return await self._check(request, context, None)
        parent = parent_context(context.invocation_metadata())
        with self.tracer.start_as_current_span(
            "authz.Check", context=parent, kind=SpanKind.SERVER
        ) as span:
            return await self._check(request, context, span)

    async def _check(
        self,
        request: external_auth_pb2.CheckRequest,
        context: grpc.aio.ServicerContext[object, object],
        span: Span | None,
    ) -> bytes:
        started = time.perf_counter()
        policy = self.holder.current
        request_id = ""
        try:
            ctx = to_context(request)
            request_id = ctx.request_id
            outcome = decide(policy, ctx, self.clock())
            if isinstance(outcome, NeedKeys):
                if await self.keys.refresh_for_unknown_kid(outcome.source):
                    outcome = decide(policy, ctx, self.clock(), may_refetch=False)
                else:
                    outcome = outcome.fallback
            if isinstance(outcome, NeedKeys):  # the refetch did not bring the key
                outcome = outcome.fallback
        except Exception:
            # Fail closed: an internal error never lets a request through.
            log.exception("check failed", extra={"request_id": request_id})
            self._count("error", "internal_error", "")
            if policy.fail_with_error:
                await context.abort(grpc.StatusCode.UNAVAILABLE, "authorization unavailable")
            return response_bytes(internal_error(), request_id)
        CHECK_SECONDS.observe(time.perf_counter() - started)
        if isinstance(outcome, Deny):
            decision, code = "deny", outcome.code
            if log.isEnabledFor(logging.DEBUG):
                log.debug("denied", extra={
                    "code": code, "route": outcome.route, "request_id": request_id})
        else:
            decision, code = "allow", "ok"
        self._count(decision, code, outcome.route)
        if span is not None:
            span.set_attribute("tollgate.decision", decision)
            span.set_attribute("tollgate.code", code)
            span.set_attribute("tollgate.route", outcome.route)
        return response_bytes(outcome, request_id)

    def _count(self, decision: str, code: str, route: str) -> None:
        # prometheus_client's labels() hashes and locks on every call: keep each
        # child counter once (codes and routes come from the config: bounded).
        key = (decision, code, route)
        counter = self._counters.get(key)
        if counter is None:
            counter = self._counters[key] = DECISIONS.labels(decision, code, route)
        counter.inc()


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


def _as_bytes(response: bytes) -> bytes:
    return response
