"""Records exported as OpenTelemetry logs over OTLP/gRPC (a tollgate.record_log sink).

Each record becomes one log record: its fields are the attributes (nested values
flattened to dotted names, lists of objects as JSON text, as OTLP attributes hold only
scalars and lists of scalars), `trace_id` is the log record's own trace id so a
backend links it to the trace, and the body names the event. The SDK's batch processor
keeps its own bounded queue and exports from its own thread.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

from opentelemetry._logs import LogRecord, SeverityNumber
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.trace import TraceFlags

from tollgate.record_log import Record

_SCALARS = (str, bool, int, float)


class OtlpLogSink:
    def __init__(self, endpoint: str, service_name: str, event: str) -> None:
        """`event`: the body of every record (e.g. `authz decision`)."""
        name = os.environ.get("OTEL_SERVICE_NAME", service_name)
        self.provider = LoggerProvider(resource=Resource.create({SERVICE_NAME: name}))
        self.provider.add_log_record_processor(
            BatchLogRecordProcessor(OTLPLogExporter(endpoint=endpoint)))
        self.logger = self.provider.get_logger(service_name)
        self.event = event

    def write(self, records: Sequence[Record]) -> None:
        for record in records:
            self.logger.emit(self.log_record(record))

    def log_record(self, record: Record) -> LogRecord:
        attributes = flatten(record)
        trace_id = attributes.pop("trace_id", "")
        when = attributes.get("time")
        return LogRecord(
            timestamp=_nanos(when) if isinstance(when, str) else None,
            trace_id=int(trace_id, 16) if isinstance(trace_id, str) and trace_id else None,
            span_id=0 if trace_id else None,
            trace_flags=TraceFlags(TraceFlags.SAMPLED) if trace_id else None,
            severity_number=SeverityNumber.INFO,
            severity_text="INFO",
            body=self.event,
            attributes=attributes,
        )

    def close(self) -> None:
        self.provider.shutdown()


def flatten(record: Record, prefix: str = "") -> dict[str, Any]:
    """A record as OTLP attributes: `{"claims": {"email": x}}` -> `claims.email`."""
    flat: dict[str, Any] = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        elif isinstance(value, list | tuple):
            if all(isinstance(v, _SCALARS) for v in value) and \
                    len({type(v) for v in value}) <= 1:
                flat[name] = list(value)
            else:
                flat[name] = json.dumps(value, separators=(",", ":"), default=str)
        elif isinstance(value, _SCALARS):
            flat[name] = value
        elif value is not None:
            flat[name] = str(value)
    return flat


def _nanos(rfc3339: str) -> int | None:
    """`2026-12-02T02:11:10.123Z` -> Unix nanoseconds (None when not that form)."""
    from datetime import datetime  # noqa: PLC0415 - only on the writer thread

    try:
        when = datetime.fromisoformat(rfc3339.replace("Z", "+00:00"))
    except ValueError:
        return None
    return int(when.timestamp() * 1_000_000_000)
