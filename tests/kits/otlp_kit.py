"""A real OTLP/gRPC receiver: the services' spans (and decision-log records, as
OpenTelemetry logs) arrive here in the tests."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent import futures
from contextlib import contextmanager
from typing import Any

import grpc
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

# A parent span context as Envoy would send it in `traceparent`.
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_SPAN}-01"


class Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self) -> None:
        self.spans: list[Any] = []
        self.logs: list[Any] = []  # LogRecord messages, as exported
        self.services: list[tuple[str, Any]] = []  # (resource service.name, span)
        self.lock = threading.Lock()

    def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: object
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        with self.lock:
            for resource_spans in request.resource_spans:
                service = next((a.value.string_value for a in resource_spans.resource.attributes
                                if a.key == "service.name"), "")
                for scope_spans in resource_spans.scope_spans:
                    self.spans.extend(scope_spans.spans)
                    self.services.extend((service, span) for span in scope_spans.spans)
        return trace_service_pb2.ExportTraceServiceResponse()


class LogsReceiver(logs_service_pb2_grpc.LogsServiceServicer):
    def __init__(self, receiver: Receiver) -> None:
        self.receiver = receiver

    def Export(
        self, request: logs_service_pb2.ExportLogsServiceRequest, context: object
    ) -> logs_service_pb2.ExportLogsServiceResponse:
        with self.receiver.lock:
            for resource_logs in request.resource_logs:
                for scope_logs in resource_logs.scope_logs:
                    self.receiver.logs.extend(scope_logs.log_records)
        return logs_service_pb2.ExportLogsServiceResponse()


@contextmanager
def otlp_receiver() -> Iterator[tuple[str, Receiver]]:
    """Yield (endpoint URL, receiver) of a receiver on a free loopback port."""
    receiver = Receiver()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(receiver, server)
    logs_service_pb2_grpc.add_LogsServiceServicer_to_server(LogsReceiver(receiver), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"http://127.0.0.1:{port}", receiver
    finally:
        server.stop(None)
