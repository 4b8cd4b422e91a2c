"""Header sanity: values a backend could split, truncate or read twice are refused.

CR, LF and NUL in a value (response splitting, truncation in C backends), values
over the size limit, and single-valued headers that arrived more than once (two
Content-Type lines: which one did the backend honour?).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from authz_service.models import RequestContext
from authz_service.validation.problems import Problem

_FORBIDDEN = re.compile(r"[\r\n\x00]")

SINGLE_VALUED = frozenset(
    {
        "authorization",
        "content-encoding",
        "content-length",
        "content-type",
        "host",
        "idempotency-key",
    }
)


@dataclass(frozen=True, slots=True)
class HeaderRules:
    max_value_bytes: int = 8192
    single_valued: frozenset[str] = SINGLE_VALUED

    def check(self, ctx: RequestContext) -> None:
        """Raise Problem (400) naming the first header that fails."""
        for name, value in ctx.headers.items():
            if name.startswith(":"):
                continue  # pseudo-headers: Envoy's own, checked by its codec
            if len(value) > self.max_value_bytes:
                raise Problem.bad(
                    "header_too_large", "header value is too large", parameter=f"header:{name}"
                )
            if _FORBIDDEN.search(value):
                raise Problem.bad(
                    "bad_header_value",
                    "header value contains CR, LF or NUL",
                    parameter=f"header:{name}",
                )
        for name in sorted(ctx.duplicate_headers & self.single_valued):
            raise Problem.bad(
                "duplicate_header", "header must be sent once", parameter=f"header:{name}"
            )
