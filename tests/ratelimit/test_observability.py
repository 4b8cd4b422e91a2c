"""Metrics and traces from a real ratelimit-service process."""

from __future__ import annotations

import urllib.request
from pathlib import Path

import grpc
import pytest

from tests.kits.otlp_kit import PARENT_SPAN, TRACE_ID, Receiver
from tests.kits.processes import free_port, wait_for
from tests.kits.ratelimit_kit import descriptor, request
from tests.kits.ratelimit_proc import ServiceProcess

pytestmark = pytest.mark.integration  # real processes: redis-server, Envoy, the service


def test_metrics_and_a_span_joined_to_envoys_trace(
    otlp_receiver: tuple[str, Receiver], tmp_path: Path
) -> None:
    endpoint, receiver = otlp_receiver
    config = tmp_path / "c.yaml"
    config.write_text(
        "domain: m\ndescriptors:\n  - key: k\n    rate_limit: {unit: hour, requests_per_unit: 1}\n"
    )
    port = free_port()
    proc = ServiceProcess(["--config", str(config)], env={
        "RATELIMIT_METRICS_ADDRESS": f"127.0.0.1:{port}",
        "RATELIMIT_OTLP_ENDPOINT": endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "50",
    })
    try:
        req = request("m", descriptor(("k", "v")))
        traceparent = f"00-{TRACE_ID}-{PARENT_SPAN}-01"
        for _ in range(3):
            proc.stub.ShouldRateLimit(req, metadata=[("traceparent", traceparent)], timeout=10)
        with pytest.raises(grpc.RpcError):
            proc.stub.ShouldRateLimit(request(""), timeout=10)
        text = urllib.request.urlopen(
            f"http://127.0.0.1:{port}/metrics", timeout=10
        ).read().decode()
        wait_for(lambda: len(receiver.spans) >= 3, timeout=15, what="spans at the receiver")
    finally:
        proc.stop()
    assert 'tollgate_ratelimit_decisions_total{outcome="ok"} 1.0' in text
    assert 'tollgate_ratelimit_decisions_total{outcome="over_limit"} 2.0' in text
    assert 'tollgate_ratelimit_decisions_total{outcome="invalid_request"} 1.0' in text
    assert 'tollgate_ratelimit_rule_hits_total{key="m.k",stat="over_limit"} 2.0' in text
    assert 'tollgate_ratelimit_rule_hits_total{key="m.k",stat="total_hits"} 3.0' in text
    assert "tollgate_ratelimit_decision_duration_seconds_count 3.0" in text
    span = receiver.spans[0]
    # OpenTelemetry's RPC conventions: the span name and the rpc.* attributes.
    rpc = "envoy.service.ratelimit.v3.RateLimitService"
    assert span.name == f"{rpc}/ShouldRateLimit"  # type: ignore[attr-defined]
    assert span.trace_id.hex() == TRACE_ID  # type: ignore[attr-defined]
    assert span.parent_span_id.hex() == PARENT_SPAN  # type: ignore[attr-defined]
    attributes = {a.key: a.value.string_value for a in span.attributes}  # type: ignore[attr-defined]
    assert attributes["tollgate.domain"] == "m"
    assert (attributes["rpc.system"], attributes["rpc.service"], attributes["rpc.method"]) == (
        "grpc", rpc, "ShouldRateLimit")
