"""RFC 9457 problem details for requests refused as malformed (400, 404, 405, 413, 415).

A Problem is both the exception the pure validators raise and the payload the
adapter renders as `application/problem+json`. `detail` is written by us and never
carries the client's value; `pointer` / `parameter` name where, truncated.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

PROBLEM_TYPE = "urn:tollgate:problem:"  # + code; stable, one per error code
MAX_LOCATION = 200  # characters of a pointer or parameter name echoed back

TITLES = {
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    500: "Internal Server Error",
}


def _clip(text: str) -> str:
    text = "".join(c if c.isprintable() else "?" for c in text)
    return text if len(text) <= MAX_LOCATION else text[: MAX_LOCATION - 3] + "..."


def pointer_of(path: Iterable[str | int]) -> str:
    """RFC 6901 JSON pointer of a path of keys and indexes."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in path)


@dataclass(frozen=True, slots=True)
class ProblemDetail:
    status: int
    code: str  # stable: the `code` member, the URN's tail and the metric label
    detail: str
    pointer: str | None = None  # RFC 6901, into the JSON body
    parameter: str | None = None  # "query:limit", "path:id", "header:x-trace"

    @property
    def type(self) -> str:
        return PROBLEM_TYPE + self.code

    @property
    def title(self) -> str:
        return TITLES.get(self.status, "Bad Request")


class Problem(Exception):
    """Raised by the pure validators; the engine turns it into a Deny."""

    def __init__(self, detail: ProblemDetail) -> None:
        super().__init__(detail.detail)
        self.detail = detail

    @classmethod
    def bad(
        cls,
        code: str,
        detail: str,
        *,
        pointer: str | None = None,
        parameter: str | None = None,
        status: int = 400,
    ) -> Problem:
        return cls(
            ProblemDetail(
                status,
                code,
                detail,
                None if pointer is None else _clip(pointer),
                None if parameter is None else _clip(parameter),
            )
        )
