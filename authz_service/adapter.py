"""Envoy CheckRequest <-> the engine's neutral types; the only module touching them.

Denied answers carry the RFC 6750 challenge and a JSON body with a stable error
code; allowed answers carry upstream headers and dynamic metadata (which Envoy
files under the `envoy.filters.http.ext_authz` namespace for later filters).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from types import MappingProxyType
from typing import Any

from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import external_auth_pb2
from envoy.type.v3 import http_status_pb2
from google.protobuf import struct_pb2
from google.rpc import code_pb2, status_pb2

from authz_service.models import Allow, Decision, Deny, RequestContext
from authz_service.problems import ProblemDetail

_OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
_GRPC_CODE = {401: code_pb2.UNAUTHENTICATED, 400: code_pb2.INVALID_ARGUMENT}
_KNOWN_STATUS = frozenset(http_status_pb2.StatusCode.values())
_NO_EXTENSIONS: MappingProxyType[str, str] = MappingProxyType({})


def to_context(request: external_auth_pb2.CheckRequest) -> RequestContext:
    attributes = request.attributes
    http = attributes.request.http
    duplicates: frozenset[str] = frozenset()
    headers: Mapping[str, str]
    if http.header_map.headers:
        raw, duplicates = _raw_headers(http.header_map.headers)
        headers = MappingProxyType(raw)
    else:
        # Envoy's map form: names already lower-case, repeats already joined. A
        # read-only view of the message's own map: nothing copied per request.
        headers = _MapView(http.headers)
    path, _, query = http.path.partition("?")
    source = attributes.source
    extensions = attributes.context_extensions
    return RequestContext(
        method=http.method.upper(),
        path=path,
        host=http.host or headers.get(":authority", ""),
        scheme=http.scheme,
        query=query or http.query,
        headers=headers,
        duplicate_headers=duplicates,
        peer_principal=source.principal,
        peer_certificate=bool(source.certificate),
        context_extensions=_MapView(extensions) if extensions else _NO_EXTENSIONS,
        request_id=http.id or headers.get("x-request-id", ""),
        body=http.raw_body or http.body.encode(),
    )


class _MapView(Mapping[str, str]):
    """Read-only view of a protobuf string map that raises KeyError when asked for
    a missing name (the map itself would insert it and answer '')."""

    __slots__ = ("_map",)

    def __init__(self, proto_map: Mapping[str, str]) -> None:
        self._map = proto_map

    def __getitem__(self, name: str) -> str:
        value = self._map.get(name)
        if value is None:
            raise KeyError(name)
        return value

    def get(self, name: str, default: Any = None) -> Any:  # the C map's own get: fast
        return self._map.get(name, default)

    def __contains__(self, name: object) -> bool:
        return name in self._map

    def __iter__(self) -> Iterator[str]:
        return iter(self._map)

    def __len__(self) -> int:
        return len(self._map)


def _raw_headers(entries: Iterable[base_pb2.HeaderValue]) -> tuple[dict[str, str], frozenset[str]]:
    """Envoy's raw form (encode_raw_headers): one entry per header line, bytes values."""
    pairs = [
        (entry.key.lower(),
         entry.raw_value.decode("utf-8", "replace") if entry.raw_value else entry.value)
        for entry in entries
    ]
    headers = dict(pairs)
    if len(headers) == len(pairs):
        return headers, frozenset()
    # A name seen more than once: join its lines in order, as Envoy's map form does.
    # Cookie lines are joined with "; " (RFC 9113 §8.2.3), others with ",".
    joined: dict[str, str] = {}
    duplicates: set[str] = set()
    for name, value in pairs:
        if name in joined:
            duplicates.add(name)
            joined[name] = f"{joined[name]}{'; ' if name == 'cookie' else ','}{value}"
        else:
            joined[name] = value
    return joined, frozenset(duplicates)


def _header(name: str, value: str) -> base_pb2.HeaderValueOption:
    return base_pb2.HeaderValueOption(
        header=base_pb2.HeaderValue(key=name, value=value), append_action=_OVERWRITE
    )


def deny_body(deny: Deny, request_id: str) -> bytes:
    body = {"error": deny.code, "error_description": deny.description}
    if request_id and len(request_id) <= 128 and request_id.isprintable():
        body["request_id"] = request_id
    return json.dumps(body, separators=(",", ":")).encode()


def problem_body(problem: ProblemDetail, request_id: str) -> bytes:
    """RFC 9457 members plus our stable `code` and the failing location."""
    body: dict[str, object] = {
        "type": problem.type,
        "title": problem.title,
        "status": problem.status,
        "detail": problem.detail,
        "code": problem.code,
    }
    if problem.pointer is not None:
        body["pointer"] = problem.pointer
    if problem.parameter is not None:
        body["parameter"] = problem.parameter
    if request_id and len(request_id) <= 128 and request_id.isprintable():
        body["request_id"] = request_id
    return json.dumps(body, separators=(",", ":")).encode()


def response_bytes(decision: Decision, request_id: str = "") -> bytes:
    """The serialized CheckResponse. An Allow reused for a cached token keeps its bytes:
    ~300 bytes, where a kept protobuf message holds an arena of several KB."""
    if isinstance(decision, Allow):
        cached = decision.wire
        if cached is None:
            cached = _encode_allowed(decision).SerializeToString()
            object.__setattr__(decision, "wire", cached)
        return cached
    denied: bytes = _denied(decision, request_id).SerializeToString()
    return denied


def _encode_allowed(allow: Allow) -> external_auth_pb2.CheckResponse:
    response = external_auth_pb2.CheckResponse(status=status_pb2.Status(code=code_pb2.OK))
    ok = response.ok_response
    ok.headers.extend(_header(name, value) for name, value in allow.headers)
    ok.headers_to_remove.extend(allow.remove_headers)
    if allow.metadata:
        response.dynamic_metadata.update(dict(allow.metadata))
    return response


def _denied(deny: Deny, request_id: str) -> external_auth_pb2.CheckResponse:
    status = deny.status if deny.status in _KNOWN_STATUS else 403
    response = external_auth_pb2.CheckResponse(
        status=status_pb2.Status(code=_GRPC_CODE.get(status, code_pb2.PERMISSION_DENIED))
    )
    denied = response.denied_response
    denied.status.code = status  # type: ignore[assignment]
    problem = deny.problem
    headers = [
        ("content-type", "application/json" if problem is None else "application/problem+json"),
        ("cache-control", "no-store"),
    ]
    if deny.challenge is not None:
        headers.append(("www-authenticate", deny.challenge))
    denied.headers.extend(_header(name, value) for name, value in headers)
    body = deny_body(deny, request_id) if problem is None else problem_body(problem, request_id)
    denied.body = body.decode()
    return response


def metadata_struct(metadata: dict[str, str]) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.update(metadata)
    return struct
