"""Denials as RFC 6750 answers: the statuses, codes and challenges clients act on."""

from __future__ import annotations

from authz_service.models import Deny
from authz_service.validation.problems import ProblemDetail


def _quote(value: str) -> str:
    # RFC 6750 §3: auth-param values are quoted-strings; keep them to printable
    # ASCII without quotes or backslashes so no client parser can be confused.
    if value.isascii() and value.isprintable() and '"' not in value and "\\" not in value:
        return value  # the usual case, checked in C; the loop below only for the others
    return "".join(c for c in value if 0x20 <= ord(c) < 0x7F and c not in '"\\')


def _challenge(realm: str, **params: str) -> str:
    parts = [f'Bearer realm="{_quote(realm)}"']
    parts += [f'{name}="{_quote(value)}"' for name, value in params.items() if value]
    return ", ".join(parts)


def dpop_refusal(
    realm: str, error: str, description: str, algs: str, route: str = "", *, nonce: str = ""
) -> Deny:
    """RFC 9449 §7.1: a 401 with a DPoP challenge naming the proof algorithms accepted;
    `use_dpop_nonce` also hands out the nonce to send (§8)."""
    params = {"error": error, "error_description": description, "algs": algs}
    challenge = ", ".join([f'DPoP realm="{_quote(realm)}"'] + [
        f'{name}="{_quote(value)}"' for name, value in params.items() if value])
    headers = (("dpop-nonce", nonce),) if nonce else ()
    return Deny(401, error, description, challenge, route, headers=headers)


def dpop_replay_unavailable(route: str = "") -> Deny:
    """The replay store could not say whether a DPoP proof is new: refused, never
    allowed unchecked; a 503 the client may retry with a fresh proof."""
    return Deny(503, "dpop_replay_unavailable", "DPoP proofs cannot be checked now", None,
                route, headers=(("retry-after", "1"),))


def missing_credentials(realm: str, route: str = "", dpop_algs: str = "") -> Deny:
    """No credentials at all: a bare challenge with no error (RFC 6750 §3.1), and a DPoP
    one naming the proof algorithms when the route takes DPoP (RFC 9449 §7.1)."""
    challenge = _challenge(realm)
    if dpop_algs:
        challenge += f', DPoP realm="{_quote(realm)}", algs="{_quote(dpop_algs)}"'
    return Deny(401, "missing_credentials", "authentication required", challenge, route)


def invalid_token(realm: str, description: str, route: str = "") -> Deny:
    return Deny(
        401,
        "invalid_token",
        description,
        _challenge(realm, error="invalid_token", error_description=description),
        route,
    )


def invalid_request(realm: str, description: str, route: str = "") -> Deny:
    return Deny(
        400,
        "invalid_request",
        description,
        _challenge(realm, error="invalid_request", error_description=description),
        route,
    )


def insufficient_scope(realm: str, scopes: str, route: str = "") -> Deny:
    return Deny(
        403,
        "insufficient_scope",
        f"requires scope: {scopes}",
        _challenge(realm, error="insufficient_scope", scope=scopes),
        route,
    )


def access_denied(description: str, route: str = "", code: str = "access_denied") -> Deny:
    """Authenticated but not allowed for a reason other than scope: no challenge."""
    return Deny(403, code, description, None, route)


def address_denied(route: str = "") -> Deny:
    """The client's address is outside the networks the policy lets in."""
    return Deny(403, "address_denied", "client address not allowed", None, route)


def no_route(route: str = "") -> Deny:
    return Deny(403, "no_matching_route", "no policy allows this request", None, route)


def keys_unavailable(route: str = "") -> Deny:
    """The issuer's signing keys are unavailable (IdP outage): a server-side 503 with no
    challenge, so clients retry instead of discarding a token that may be good."""
    return Deny(503, "keys_unavailable", "the token issuer's signing keys are unavailable",
                None, route)


def dependency_unavailable(code: str, description: str, route: str = "") -> Deny:
    """A service the credential's check needs (an introspection endpoint) is down, slow
    or answering garbage: a 503 with no challenge, so the client retries with the same
    credential; never an allow."""
    return Deny(503, code, description, None, route, headers=(("retry-after", "1"),))


def internal_error() -> Deny:
    return Deny(403, "internal_error", "the request could not be authorized", None, "")


def malformed(problem: ProblemDetail, route: str = "") -> Deny:
    """The request failed validation: RFC 9457 problem details, no challenge."""
    return Deny(problem.status, problem.code, problem.detail, None, route, problem)


def rate_limited(
    retry_after_seconds: int, headers: tuple[tuple[str, str], ...], route: str = ""
) -> Deny:
    """429 (RFC 6585) with Retry-After and the rate-limit headers of the limit hit."""
    return Deny(
        429, "rate_limited", "rate limit exceeded", None, route,
        headers=(("retry-after", str(retry_after_seconds)), *headers),
    )


def limits_unavailable(route: str = "") -> Deny:
    """The rate-limit store is down and the limit set says `store_failure_mode: closed`."""
    return Deny(
        503, "rate_limit_unavailable", "rate limiting is unavailable", None, route,
        headers=(("retry-after", "1"),),
    )
