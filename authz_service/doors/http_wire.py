"""The HTTP door's wire format: Envoy's `http_service` request <-> the neutral types.

Envoy sends the client's method, `path_prefix` + the client's path and query, the
allow-listed client headers, the buffered body, and the attribute headers of
authz_service.contract. An answer is a whole HTTP/1.1 response: 200 with the upstream
headers, `x-envoy-auth-headers-to-remove` and the metadata headers; anything else is
a denial Envoy passes to the client (status, headers, body).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from http import HTTPStatus
from types import MappingProxyType
from typing import Protocol

from authz_service.contract import (
    ATTRIBUTE_HEADERS,
    HEADERS_TO_REMOVE,
    ROUTE_EXTENSION,
    SCOPES_EXTENSION,
)
from authz_service.doors.bodies import denial_body, denial_headers
from authz_service.models import Allow, Answer, Deny, RequestContext
from tollgate.http_server import HttpRequest
from tollgate.memo import Memo

_ATTRIBUTE = {header: name for name, header in ATTRIBUTE_HEADERS.items()}
_NO_EXTENSIONS: Mapping[str, str] = MappingProxyType({})
_STATUS_LINES = {s.value: f"HTTP/1.1 {s.value} {s.phrase}\r\n".encode() for s in HTTPStatus}


class NotACheck(Exception):
    """The request target is not under the door's path prefix."""


def to_context(request: HttpRequest, path_prefix: str) -> RequestContext:
    target = request.target
    if not target.startswith(path_prefix) or target[len(path_prefix) : len(path_prefix) + 1] \
            != "/":
        raise NotACheck(target)
    path, _, query = target[len(path_prefix) :].partition("?")
    lines = request.headers
    headers = dict(lines)
    duplicates: frozenset[str] = frozenset()
    if len(headers) == len(lines):
        # Each name once (Envoy joins repeats): take the attributes out of the headers.
        attributes = {field: headers.pop(header) for field, header in _ATTRIBUTE_FIELDS
                      if header in headers}
    else:
        headers, duplicates, attributes = split_headers(lines)
    extensions = _NO_EXTENSIONS
    route, scopes = attributes.get("route"), attributes.get("scopes")
    if route or scopes:
        extensions = MappingProxyType({
            k: v for k, v in ((ROUTE_EXTENSION, route), (SCOPES_EXTENSION, scopes)) if v
        })
    fingerprint = attributes.get("peer_certificate_sha256", "")
    return RequestContext(
        method=request.method.upper(),
        path=path,
        host=headers.get("host", ""),
        scheme=attributes.get("scheme") or "https",
        query=query,
        headers=MappingProxyType(headers),
        duplicate_headers=duplicates,
        peer_principal=attributes.get("peer_principal", ""),
        peer_certificate=bool(fingerprint),
        context_extensions=extensions,
        request_id=headers.get("x-request-id", ""),
        body=request.body,
        source_address=attributes.get("source_address", ""),
        peer_certificate_sha256=fingerprint.replace(":", "").lower() if fingerprint else "",
    )


_ATTRIBUTE_FIELDS = tuple(ATTRIBUTE_HEADERS.items())


def split_headers(
    lines: list[tuple[str, str]],
) -> tuple[dict[str, str], frozenset[str], dict[str, str]]:
    """The client's headers, the names seen more than once, and the attribute headers.

    A header name on several lines is joined as Envoy's map form joins
    them (cookies with '; ', others with ','), and an attribute set twice trusted for
    neither (Envoy sets each once: a second one came from somewhere else)."""
    headers: dict[str, str] = {}
    duplicates: set[str] = set()
    attributes: dict[str, str] = {}
    repeated: set[str] = set()
    for name, value in lines:
        known = _ATTRIBUTE.get(name)
        if known is not None:
            if known in attributes:
                repeated.add(known)
            attributes[known] = value
        elif name in headers:
            duplicates.add(name)
            headers[name] = f"{headers[name]}{'; ' if name == 'cookie' else ','}{value}"
        else:
            headers[name] = value
    for known in repeated:
        attributes[known] = ""
    return headers, frozenset(duplicates), attributes


class DenyRenderer(Protocol):
    def __call__(self, deny: Deny, request_id: str, *, head_only: bool = False) -> bytes: ...


class AnswerRenderer:
    """Answers as HTTP responses; a reused Allow's (a cached token's) status line and
    headers are rendered once and kept, the rate-limit headers added per request.
    `deny` renders denials (a forwarding proxy may want them its own way)."""

    def __init__(self, memo_entries: int = 10_000, deny: DenyRenderer | None = None) -> None:
        self._heads: Memo[bytes] = Memo(memo_entries)
        self._deny: DenyRenderer = deny_response if deny is None else deny

    def render(self, answer: Answer, request_id: str, *, head_only: bool = False) -> bytes:
        decision = answer.decision
        if not isinstance(decision, Allow):
            return self._deny(decision, request_id, head_only=head_only)
        head = self._heads.get(decision, None)
        if head is None:
            head = self._heads.put(decision, None, allow_head(decision))
        return allow_response(head, answer.client_headers)


def _lines(headers: Iterable[tuple[str, str]]) -> bytes:
    return "".join([f"{name}: {value}\r\n" for name, value in headers]).encode()


def allow_head(allow: Allow) -> bytes:
    """An allow's response up to (not including) the client headers and the blank line;
    the same for every request a cached token makes on this route."""
    headers = list(allow.headers)
    if allow.remove_headers:
        headers.append((HEADERS_TO_REMOVE, ",".join(allow.remove_headers)))
    headers.extend(allow.metadata.items())
    return _STATUS_LINES[200] + b"content-length: 0\r\n" + _lines(headers)


def allow_response(head: bytes, client_headers: tuple[tuple[str, str], ...]) -> bytes:
    if not client_headers:
        return head + b"\r\n"
    # Per request (the rate-limit headers): "name: value" lines joined in C, one encode.
    return head + ("\r\n".join(map(": ".join, client_headers)) + "\r\n\r\n").encode()


def deny_response(deny: Deny, request_id: str, *, head_only: bool = False,
                  extra_headers: tuple[tuple[str, str], ...] = ()) -> bytes:
    status = deny.status if deny.status in _STATUS_LINES and deny.status != 200 else 403
    body = denial_body(deny, request_id)
    headers = [*denial_headers(deny), *extra_headers, ("content-length", str(len(body)))]
    response = _STATUS_LINES[status] + _lines(headers) + b"\r\n"
    return response if head_only else response + body
