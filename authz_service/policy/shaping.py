"""Denials the operator shapes: another status, more headers, a JSON body template or a
redirect (a browser route sends the user to a login page instead of a 401 body).

Templates see only TEMPLATE_FIELDS (authz_service.policy.config): the stable code, our
description, the status, the route, the request id and the request path, never the
query string, a header, the body or a claim, so no shape can echo a credential. Values
are escaped for where they go: JSON-encoded in a body, percent-encoded in a Location,
printable ASCII in a header. Without a shape the defaults stay RFC 6750 / RFC 9457.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import quote

from authz_service.models import Deny, RequestContext
from authz_service.policy.config import DenialShape

_REDIRECT_STATUS = 302
MAX_FIELD = 512  # a path longer than this is cut in a template: no giant Location


@dataclass(frozen=True, slots=True)
class CompiledShape:
    codes: frozenset[str]
    status: int | None
    headers: tuple[tuple[str, str], ...]
    body: Any  # the JSON template, or None
    redirect: str | None

    def applies(self, deny: Deny) -> bool:
        return deny.code in self.codes

    def shape(self, deny: Deny, ctx: RequestContext) -> Deny:
        """The denial as this shape answers it (call when `applies`)."""
        fields = _fields(deny, ctx)
        headers = (*deny.headers, *((n, _header_safe(v.format_map(fields)))
                                    for n, v in self.headers))
        if self.redirect is not None:
            location = self.redirect.format_map({k: quote(v, safe="/") for k, v in
                                                 fields.items()})
            return replace(deny, status=self.status or _REDIRECT_STATUS, challenge=None,
                           problem=None, headers=(*headers, ("location",
                                                             _header_safe(location))),
                           body=b"", content_type="text/plain")
        status = self.status or deny.status
        if self.body is None:
            return replace(deny, status=status, headers=headers)
        fields["status"] = str(status)
        body = json.dumps(_fill(self.body, fields), separators=(",", ":")).encode()
        return replace(deny, status=status, headers=headers, problem=None, body=body,
                       content_type="application/json")


def compile_shape(shape: DenialShape) -> CompiledShape:
    return CompiledShape(
        codes=frozenset(shape.codes),
        status=shape.status,
        headers=tuple(shape.headers.items()),
        body=shape.body,
        redirect=shape.redirect,
    )


def _fields(deny: Deny, ctx: RequestContext) -> dict[str, str]:
    return {
        "code": deny.code,
        "description": deny.description,
        "status": str(deny.status),
        "route": deny.route,
        "request_id": ctx.request_id[:MAX_FIELD],
        "path": ctx.path[:MAX_FIELD],
    }


def _fill(node: Any, fields: dict[str, str]) -> Any:
    if isinstance(node, str):
        return node.format_map(fields)
    if isinstance(node, dict):
        return {k: _fill(v, fields) for k, v in node.items()}
    if isinstance(node, list):
        return [_fill(v, fields) for v in node]
    return node


def _header_safe(value: str) -> str:
    return "".join(c for c in value if 0x20 <= ord(c) < 0x7F)
