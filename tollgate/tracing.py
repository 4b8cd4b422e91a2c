"""OpenTelemetry traces whose spans are children of Envoy's span.

Envoy propagates its trace context on the gRPC call to ext_authz and to the rate
limit service (W3C `traceparent`, or B3 headers with the Zipkin tracer); the
context is extracted from the call's metadata so our span joins Envoy's trace.
Tracing is off unless an OTLP endpoint is configured (standard OTEL_* variables
or --otlp-endpoint): a disabled tracer costs nothing on the hot path.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.propagate import extract

log = logging.getLogger("tollgate.tracing")


def configure_tracing(service_name: str, endpoint: str) -> trace.Tracer | None:
    """Install an OTLP/gRPC exporter; None when no endpoint is configured."""
    endpoint = endpoint or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "") or (
        os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "")
    )
    if not endpoint:
        return None
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # noqa: PLC0415
        OTLPSpanExporter,
    )
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource  # noqa: PLC0415
    from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415
    from opentelemetry.sdk.trace.export import BatchSpanProcessor  # noqa: PLC0415

    name = os.environ.get("OTEL_SERVICE_NAME", service_name)
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: name}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    trace.set_tracer_provider(provider)
    log.info("tracing enabled", extra={"endpoint": endpoint, "service": name})
    return trace.get_tracer(service_name)


def parent_context(metadata: Iterable[tuple[str, Any]] | None) -> Context:
    """The trace context Envoy sent in the gRPC call's metadata."""
    carrier = {key: value for key, value in metadata or () if isinstance(value, str)}
    return extract(carrier)
