"""Health over HTTP for probes that do not speak gRPC health, on tollgate.http_server.

`/healthz` is liveness (the process answers), `/ready` readiness (503 naming each
blocker: a JWT source without keys yet, a store not reached, the drain) and
`/healthcheck` the envoyproxy/ratelimit form of readiness (200 `OK`, else 500), so a
probe written for the reference keeps working after a migration.
"""

from __future__ import annotations

from collections.abc import Callable

from tollgate.http_server import HttpRequest, simple_response

Blockers = Callable[[], dict[str, str]]
HEALTH_PATHS = frozenset({"/healthz", "/ready", "/healthcheck"})


def health_response(request: HttpRequest, blockers: Blockers) -> bytes | None:
    """The answer to a health request, or None when the request is not one."""
    path = request.target.partition("?")[0]
    if path not in HEALTH_PATHS or request.method not in ("GET", "HEAD"):
        return None
    head = request.method == "HEAD"
    if path == "/healthz":
        return simple_response(200, b"ok\n", head=head)
    why = blockers()
    if path == "/healthcheck":
        return simple_response(500, head=head) if why else simple_response(200, b"OK", head=head)
    if not why:
        return simple_response(200, b"ready\n", head=head)
    lines = "".join(f"{name}: {reason}\n" for name, reason in sorted(why.items()))
    return simple_response(503, b"not ready\n" + lines.encode(), head=head)


class HealthPage:
    """A handler serving only the health paths (404 otherwise)."""

    def __init__(self, blockers: Blockers) -> None:
        self.blockers = blockers

    def __call__(self, request: HttpRequest) -> bytes:
        answer = health_response(request, self.blockers)
        return answer if answer is not None else simple_response(404, b"not found\n")
