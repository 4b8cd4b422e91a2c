"""A denial as the client sees it, the same through every door: its headers and body.

The body is JSON with a stable `error` code (`{"error", "error_description",
"request_id"}`), or RFC 9457 problem details for a malformed request; both are
described by protos/tollgate/v1/denial.schema.json.
"""

from __future__ import annotations

import json

from authz_service.models import Deny
from authz_service.validation.problems import ProblemDetail

MAX_REQUEST_ID = 128


def denial_headers(deny: Deny) -> list[tuple[str, str]]:
    problem = deny.problem
    content_type = deny.content_type or (
        "application/json" if problem is None else "application/problem+json")
    headers = [("content-type", content_type), ("cache-control", "no-store")]
    if deny.challenge is not None:
        headers.append(("www-authenticate", deny.challenge))
    headers.extend(deny.headers)
    return headers


def denial_body(deny: Deny, request_id: str) -> bytes:
    if deny.body is not None:  # shaped by the operator: already rendered
        return deny.body
    if deny.problem is not None:
        return problem_body(deny.problem, request_id)
    body = {"error": deny.code, "error_description": deny.description}
    if _echoable(request_id):
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
    if _echoable(request_id):
        body["request_id"] = request_id
    return json.dumps(body, separators=(",", ":")).encode()


def _echoable(request_id: str) -> bool:
    return bool(request_id) and len(request_id) <= MAX_REQUEST_ID and request_id.isprintable()
