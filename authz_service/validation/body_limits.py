"""Body framing checks done before any parsing: truncation, size, media type, encoding.

A body Envoy truncated (`x-envoy-auth-partial-body: true`, sent when the filter's
`allow_partial_message` is on) is refused, never validated as if whole.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from authz_service.models import RequestContext
from authz_service.validation.problems import Problem

PARTIAL_BODY_HEADER = "x-envoy-auth-partial-body"


def media_type(content_type: str) -> tuple[str, dict[str, str]]:
    """`application/json; charset=UTF-8` -> ("application/json", {"charset": "utf-8"})."""
    kind, *params = content_type.split(";")
    parsed: dict[str, str] = {}
    for param in params:
        key, _, value = param.partition("=")
        parsed[key.strip().lower()] = value.strip().strip('"').lower()
    return kind.strip().lower(), parsed


def media_type_matches(kind: str, patterns: Sequence[str]) -> bool:
    """Exact names, or `application/*+json` for any structured-syntax JSON type."""
    for pattern in patterns:
        if pattern == kind:
            return True
        head, star, tail = pattern.partition("*")
        if star and kind.startswith(head) and kind.endswith(tail) and len(kind) > len(pattern):
            return True
    return False


@dataclass(frozen=True, slots=True)
class BodyLimits:
    max_bytes: int = 65536
    content_types: tuple[str, ...] = ("application/json",)

    def check(self, ctx: RequestContext, *, required: bool) -> bool:
        """True when there is a body to parse; raise Problem (400/413/415) otherwise."""
        headers = ctx.headers
        if headers.get(PARTIAL_BODY_HEADER, "").strip().lower() == "true":
            raise Problem.bad(
                "body_truncated", "body exceeds what the gateway buffers", status=413
            )
        declared = headers.get("content-length", "").strip()
        length = int(declared) if declared.isascii() and declared.isdigit() else None
        if (length is not None and (len(declared) > 12 or length > self.max_bytes)) or len(
            ctx.body
        ) > self.max_bytes:
            raise Problem.bad(
                "body_too_large", f"body exceeds {self.max_bytes} bytes", status=413
            )
        chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        if not ctx.body and (chunked or (length is not None and length > 0)):
            # The client sent a body Envoy did not buffer for us (with_request_body is
            # not set on this route): validating "nothing" would let it through unseen.
            raise Problem.bad(
                "body_not_buffered", "the gateway did not forward the body", status=500
            )
        if length is not None and length != len(ctx.body):
            raise Problem.bad(
                "body_truncated", "body is shorter than its content-length", status=413
            )
        if not ctx.body:
            if required:
                raise Problem.bad("body_required", "a request body is required")
            return False
        encoding = headers.get("content-encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            raise Problem.bad(
                "unsupported_encoding", "compressed bodies are not accepted", status=415
            )
        kind, params = media_type(headers.get("content-type", ""))
        if not media_type_matches(kind, self.content_types):
            raise Problem.bad(
                "unsupported_media_type",
                f"content-type must be {' or '.join(self.content_types)}",
                status=415,
            )
        if params.get("charset", "utf-8") != "utf-8":
            raise Problem.bad(
                "unsupported_media_type", "only charset=utf-8 is accepted", status=415
            )
        return True
