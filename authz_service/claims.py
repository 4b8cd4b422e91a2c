"""Claim paths: where in a token's claims a value is read, e.g. `realm_access.roles`.

Syntax: names separated by dots; a name that itself contains dots (or any other
character) is double-quoted, bare (`resource_access."orders.api".roles`) or in
brackets (`resource_access["orders.api"].roles`, `["https://example.com/roles"]`);
`[N]` after a name picks an array element (`groups[0]`). Parsed once when the config
loads; reading is a walk over dicts and lists that never raises.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

_NAME = re.compile(r'[^."\[\]\s]+')
_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')
_INDEX = re.compile(r"\[(\d{1,6})\]")
_BRACKETED = re.compile(r'\["((?:[^"\\]|\\.)*)"\]')


class ClaimPathError(ValueError):
    """A claim path that cannot be parsed; the message says where."""


@dataclass(frozen=True, slots=True)
class ClaimPath:
    text: str
    steps: tuple[str | int, ...]  # keys and array indexes, in order

    @property
    def root(self) -> str:
        """The top-level claim this path starts at (what a token cache must keep)."""
        first = self.steps[0]
        return first if isinstance(first, str) else ""

    def read(self, claims: Mapping[str, Any]) -> Any:
        """The value at this path, or None where any step is missing."""
        node: Any = claims
        for step in self.steps:
            if isinstance(step, int):
                if not isinstance(node, list) or step >= len(node):
                    return None
                node = node[step]
            elif isinstance(node, Mapping):
                node = node.get(step)
                if node is None:
                    return None
            else:
                return None
        return node


def parse_claim_path(text: str) -> ClaimPath:
    steps: list[str | int] = []
    pos = 0
    while True:
        quoted = _QUOTED.match(text, pos) or (_BRACKETED.match(text, pos) if pos == 0 else None)
        plain = None if quoted else _NAME.match(text, pos)
        if quoted:
            steps.append(_unescape(quoted.group(1)))
            pos = quoted.end()
        elif plain:
            steps.append(plain.group(0))
            pos = plain.end()
        else:
            raise ClaimPathError(f"claim path '{text}': expected a name at position {pos + 1}")
        while (sub := _INDEX.match(text, pos) or _BRACKETED.match(text, pos)) is not None:
            digits = sub.re is _INDEX
            steps.append(int(sub.group(1)) if digits else _unescape(sub.group(1)))
            pos = sub.end()
        if pos == len(text):
            return ClaimPath(text, tuple(steps))
        if text[pos] != ".":
            raise ClaimPathError(f"claim path '{text}': unexpected '{text[pos]}' at position "
                                 f"{pos + 1}")
        pos += 1


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


def scalar_text(value: Any) -> str | None:
    """A claim value as descriptor or header text: strings and numbers only."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return str(value)
    return None
