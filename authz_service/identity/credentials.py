"""Finding credentials in a request (pure), with RFC 6750's malformed-request rules."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from authz_service.identity.errors import InvalidCredential, MalformedRequest
from authz_service.models import RequestContext


@dataclass(frozen=True, slots=True)
class HeaderLocation:
    header: str
    prefix: str  # scheme prefix such as "Bearer "; matched case-insensitively


@dataclass(frozen=True, slots=True)
class CookieLocation:
    cookie: str


Location = HeaderLocation | CookieLocation
# RFC 9449 §7.1: a DPoP-bound token travels under its own scheme.
DPOP_AUTHORIZATION = HeaderLocation("authorization", "DPoP ")


def read_header_credential(
    ctx: RequestContext, location: HeaderLocation, max_bytes: int
) -> str | None:
    """The credential in this header, None when absent or of another scheme."""
    raw = ctx.headers.get(location.header)
    if raw is None:
        return None
    if location.header in ctx.duplicate_headers:
        raise MalformedRequest("credentials sent more than once")
    value = raw.strip()
    prefix = location.prefix
    if prefix:
        scheme = prefix.strip().lower()
        head, _, rest = value.partition(" ")
        if head.lower() != scheme:
            return None  # another scheme (e.g. Basic): not ours to judge
        value = rest.strip()
    if not value:
        raise MalformedRequest("empty credential")
    if "," in value:
        # Envoy joins repeated headers with ','; no token or key contains one.
        raise MalformedRequest("credentials sent more than once")
    if len(value) > max_bytes:
        raise InvalidCredential("credential too large")
    # No whitespace of any kind: `isprintable` is false for every Unicode separator and
    # control character but the ASCII space (the same set as the regex \s, in C).
    if " " in value or not value.isprintable():
        raise MalformedRequest("malformed credential")
    return value


def read_cookie_credential(
    ctx: RequestContext, location: CookieLocation, max_bytes: int
) -> str | None:
    raw = ctx.headers.get("cookie")
    if raw is None:
        return None
    found: list[str] = []
    for part in raw.split(";"):
        name, sep, value = part.strip().partition("=")
        if sep and name == location.cookie:
            found.append(value.strip().strip('"'))
    if not found:
        return None
    if len(found) > 1:
        raise MalformedRequest("credentials sent more than once")
    if not found[0]:
        raise MalformedRequest("empty credential")
    if len(found[0]) > max_bytes:
        raise InvalidCredential("credential too large")
    return found[0]


def find_token(
    ctx: RequestContext, locations: Sequence[Location], max_bytes: int
) -> str | None:
    """The one token in the request; two places at once is malformed (RFC 6750 §2)."""
    token: str | None = None
    for location in locations:
        if isinstance(location, HeaderLocation):
            value = read_header_credential(ctx, location, max_bytes)
        else:
            value = read_cookie_credential(ctx, location, max_bytes)
        if value is None:
            continue
        if token is not None:
            raise MalformedRequest("credentials sent by more than one method")
        token = value
    return token
