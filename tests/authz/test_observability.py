"""Metrics and traces from a real authz-service process.

Traces go to a real OTLP/gRPC receiver started here; the span must be a child of
the trace context that "Envoy" (this test) sent in the Check call's metadata.
"""

from __future__ import annotations

import urllib.request
from pathlib import Path

import pytest

from tests.kits import jwt_kit
from tests.kits.authz_stack import Stack
from tests.kits.grpc_kit import authz_process, check_request
from tests.kits.otlp_kit import PARENT_SPAN, TRACE_ID, Receiver
from tests.kits.processes import free_port, wait_for


@pytest.mark.integration
def test_check_span_joins_envoys_trace(
    stack: Stack, otlp_receiver: tuple[str, Receiver], tmp_path: Path
) -> None:
    endpoint, receiver = otlp_receiver
    env = {"AUTHZ_OTLP_ENDPOINT": endpoint, "OTEL_BSP_SCHEDULE_DELAY": "50"}
    with authz_process(stack.config, tmp_path, env=env) as (_, client):
        traceparent = f"00-{TRACE_ID}-{PARENT_SPAN}-01"
        response = client.stub.Check(
            check_request(), metadata=[("traceparent", traceparent)], timeout=10
        )
        assert response.status.code != 0
        wait_for(lambda: bool(receiver.spans), timeout=15, what="a span at the OTLP receiver")
    span = receiver.spans[0]
    # OpenTelemetry's RPC conventions: the span name and the rpc.* attributes.
    assert span.name == "envoy.service.auth.v3.Authorization/Check"  # type: ignore[attr-defined]
    assert span.trace_id.hex() == TRACE_ID  # type: ignore[attr-defined]
    assert span.parent_span_id.hex() == PARENT_SPAN  # type: ignore[attr-defined]
    attributes = {a.key: a.value.string_value for a in span.attributes}  # type: ignore[attr-defined]
    assert attributes["tollgate.code"] == "missing_credentials"
    assert attributes["tollgate.route"] == "orders-read"
    assert (attributes["rpc.system"], attributes["rpc.service"], attributes["rpc.method"]) == (
        "grpc", "envoy.service.auth.v3.Authorization", "Check")
    codes = {a.key: a.value.int_value for a in span.attributes}  # type: ignore[attr-defined]
    assert codes["rpc.grpc.status_code"] == 0


@pytest.mark.integration
def test_metrics_count_decisions_by_code_and_route(stack: Stack, tmp_path: Path) -> None:
    port = free_port()
    env = {"AUTHZ_METRICS_ADDRESS": f"127.0.0.1:{port}"}
    with authz_process(stack.config, tmp_path, env=env) as (_, client):
        client.check(check_request())
        token = jwt_kit.mint(stack.key)
        client.check(check_request(headers={"authorization": f"Bearer {token}"}))
        url = f"http://127.0.0.1:{port}/metrics"
        body = urllib.request.urlopen(url, timeout=5).read().decode()
    assert (
        'tollgate_authz_decisions_total{code="missing_credentials",decision="deny",'
        'route="orders-read"} 1.0'
    ) in body
    assert 'tollgate_authz_decisions_total{code="ok",decision="allow",route="orders-read"} 1.0' in (
        body
    )
    assert "tollgate_authz_check_duration_seconds_count 2.0" in body
    assert "tollgate_authz_token_cache_entries 1.0" in body
