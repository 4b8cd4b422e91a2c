"""RateLimitRequest <-> neutral types: the only module that touches Envoy protobufs."""

from __future__ import annotations

from envoy.config.core.v3 import base_pb2
from envoy.service.ratelimit.v3 import rls_pb2

from ratelimit_service.decision import Answer, RequestError
from ratelimit_service.models import Descriptor, Entry, Limit, RateLimitQuery, Unit

_Response = rls_pb2.RateLimitResponse
_UNITS = {unit.value: unit for unit in Unit}
_MAX_UINT32 = 2**32 - 1
_MAX_SECONDS = 315_576_000_000  # google.protobuf.Duration's bound (10,000 years)


def _uint32(value: int) -> int:
    return min(max(value, 0), _MAX_UINT32)


def to_query(request: rls_pb2.RateLimitRequest) -> RateLimitQuery:
    """Envoy's request in neutral form; RequestError for an override with no unit."""
    descriptors = []
    for d in request.descriptors:
        override = None
        if d.HasField("limit"):
            unit = _UNITS.get(d.limit.unit)
            if unit is None:
                raise RequestError(f"descriptor limit override has unknown unit {d.limit.unit}")
            override = Limit(d.limit.requests_per_unit, unit)
        descriptors.append(
            Descriptor(
                tuple(Entry(e.key, e.value) for e in d.entries),
                override,
                d.hits_addend.value if d.HasField("hits_addend") else None,
            )
        )
    return RateLimitQuery(request.domain, tuple(descriptors), request.hits_addend)


def to_response(decision: Answer) -> rls_pb2.RateLimitResponse:
    response = _Response(overall_code=int(decision.overall_code))
    for status in decision.statuses:
        # Every number is kept inside its field's range: a value a client made huge
        # must not turn an answer into an exception.
        item = response.statuses.add(
            code=int(status.code), limit_remaining=_uint32(status.limit_remaining)
        )
        limit = status.current_limit
        if limit is not None:
            item.current_limit.requests_per_unit = _uint32(limit.requests_per_unit)
            item.current_limit.unit = int(limit.unit)
            if limit.name:
                item.current_limit.name = limit.name
        if status.duration_until_reset is not None:
            item.duration_until_reset.seconds = min(max(status.duration_until_reset, 0),
                                                    _MAX_SECONDS)
    for name, value in decision.headers:
        response.response_headers_to_add.append(base_pb2.HeaderValue(key=name, value=value))
    if decision.dynamic_metadata is not None:
        response.dynamic_metadata.update(decision.dynamic_metadata)
    return response
