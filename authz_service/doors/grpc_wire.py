"""Envoy CheckRequest <-> the engine's neutral types; the only module touching them.

Denied answers carry the RFC 6750 challenge and a JSON body with a stable error
code; allowed answers carry upstream headers and dynamic metadata (which Envoy
files under the `envoy.filters.http.ext_authz` namespace for later filters).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from types import MappingProxyType
from typing import Any

from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import external_auth_pb2
from envoy.type.v3 import http_status_pb2
from google.rpc import code_pb2, status_pb2

from authz_service.doors.bodies import denial_body, denial_headers
from authz_service.models import Allow, Answer, Deny, RequestContext
from tollgate.memo import Memo

_OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
_GRPC_CODE = {401: code_pb2.UNAUTHENTICATED, 400: code_pb2.INVALID_ARGUMENT}
_KNOWN_STATUS = frozenset(http_status_pb2.StatusCode.values())
_NO_EXTENSIONS: MappingProxyType[str, str] = MappingProxyType({})


def to_context(request: external_auth_pb2.CheckRequest, trace_parent: str = "") -> RequestContext:
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
    # Envoy's own stream id (`http.id`) only when no x-request-id came: the denial body
    # names the id that Envoy's access log and the upstream see.
    request_id = headers.get("x-request-id") or http.id
    certificate = source.certificate  # read once: a upb string field copies per read
    return RequestContext(
        method=http.method.upper(),
        path=path,
        host=http.host or headers.get(":authority", ""),
        scheme=http.scheme,
        query=query or http.query,
        headers=headers,
        duplicate_headers=duplicates,
        peer_principal=source.principal,
        peer_certificate=bool(certificate),
        context_extensions=_MapView(extensions) if extensions else _NO_EXTENSIONS,
        request_id=request_id,
        body=http.raw_body or http.body.encode(),
        source_address=source.address.socket_address.address,
        peer_certificate_pem=certificate,
        trace_parent=trace_parent,
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


class AnswerEncoder:
    """Answers as CheckResponse bytes; a reused Allow (a cached token's) is encoded once
    and its bytes kept beside it. The per-request rate-limit headers are appended as
    bytes protobuf merges into the same response."""

    def __init__(self, memo_entries: int = 10_000) -> None:
        self._kept: Memo[bytes] = Memo(memo_entries)

    def encode(self, answer: Answer, request_id: str) -> bytes:
        decision = answer.decision
        if not isinstance(decision, Allow):
            return deny_bytes(decision, request_id)
        kept = self._kept.get(decision, None)
        if kept is None:
            kept = self._kept.put(decision, None, allow_bytes(decision))
        if answer.client_headers:
            return kept + client_headers_bytes(answer.client_headers)
        return kept


def allow_bytes(allow: Allow) -> bytes:
    """The serialized OK CheckResponse of an Allow (the door keeps it for cached tokens)."""
    encoded: bytes = _encode_allowed(allow).SerializeToString()
    return encoded


def client_headers_bytes(headers: tuple[tuple[str, str], ...]) -> bytes:
    """Headers for the client's response on an allow, as CheckResponse bytes to append
    to an allow's kept bytes: protobuf merges a repeated embedded message's fields, so
    `kept + these` reads as one CheckResponse with both."""
    if not headers:
        return b""
    response = external_auth_pb2.CheckResponse()
    response.ok_response.response_headers_to_add.extend(
        _header(name, value) for name, value in headers
    )
    encoded: bytes = response.SerializeToString()
    return encoded


def deny_bytes(deny: Deny, request_id: str) -> bytes:
    encoded: bytes = _denied(deny, request_id).SerializeToString()
    return encoded


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
    denied.headers.extend(_header(name, value) for name, value in denial_headers(deny))
    denied.body = denial_body(deny, request_id).decode()
    return response

