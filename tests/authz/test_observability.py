"""Metrics and traces from a real authz-service process.

Traces go to a real OTLP/gRPC receiver started here; the span must be a child of
the trace context that "Envoy" (this test) sent in the Check call's metadata.
"""

from __future__ import annotations

import threading
import urllib.request
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from tests.authz import jwt_kit
from tests.authz.conftest import Stack
from tests.authz.grpc_kit import authz_process, check_request
from tests.support import free_port, wait_for

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_SPAN = "00f067aa0ba902b7"


class Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self) -> None:
        self.spans: list[object] = []
        self.lock = threading.Lock()

    def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: object
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        with self.lock:
            for resource_spans in request.resource_spans:
                for scope_spans in resource_spans.scope_spans:
                    self.spans.extend(scope_spans.spans)
        return trace_service_pb2.ExportTraceServiceResponse()


@pytest.fixture
def otlp_receiver() -> Iterator[tuple[str, Receiver]]:
    receiver = Receiver()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(receiver, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"http://127.0.0.1:{port}", receiver
    server.stop(None)


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
    assert span.name == "authz.Check"  # type: ignore[attr-defined]
    assert span.trace_id.hex() == TRACE_ID  # type: ignore[attr-defined]
    assert span.parent_span_id.hex() == PARENT_SPAN  # type: ignore[attr-defined]
    attributes = {a.key: a.value.string_value for a in span.attributes}  # type: ignore[attr-defined]
    assert attributes["tollgate.code"] == "missing_credentials"
    assert attributes["tollgate.route"] == "orders-read"


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
