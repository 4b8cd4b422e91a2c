"""A JSON body parser that refuses what a backend could read two ways, or choke on.

Pure and bounded: the text is UTF-8 only (no BOM, no UTF-16 guessing), objects
with a repeated key are refused (two parsers may keep different values), numbers
are refused before conversion when they carry more characters than allowed (so
a 100k-digit integer costs a length check, not a quadratic conversion) or do not
fit a float, NaN and Infinity are not JSON, and nesting deeper than the limit is
refused. A body without a digit run longer than the limit or a 3-digit exponent
skips the per-number check: its numbers have at most that many mantissa characters
and a 2-digit exponent, so they are finite and cheap to convert (the hooks apply the
same rule, so both paths accept the same numbers).

Depth is bounded twice: CPython's C scanner stops at the interpreter's recursion
limit (a nesting bomb raises RecursionError after ~1000 levels, in microseconds),
and only a text with more opening brackets than the limit pays for an exact,
linear depth scan. Where a refusal has a location, the location is found by a
walk of the parsed tree on the failure path only.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from itertools import accumulate
from typing import Any

from authz_service.validation.problems import Problem, pointer_of

# The depth scan runs on a body json.loads accepted: escapes dropped first, then every
# byte but brackets and quotes (bytes.translate, ~1 ns a byte), then the strings,
# which are terminated and now hold no quote; what is left is summed.
_ESCAPE = re.compile(rb"\\.", re.DOTALL)
_NOT_STRUCTURAL = bytes(b for b in range(256) if b not in b'[]{}"')
_STRING = re.compile(rb'"[^"]*"')
_DEPTH_STEP = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}
# Number screening by byte class (digits and '.' -> 0, e/E -> e, signs -> s, rest ->
# space): only a body with a long run of digits or a 3-digit exponent pays for the
# number hooks, which cost a Python call per number (4x the parse of an int array).
_NUMBER_CLASS = bytes(
    ord("0") if chr(b) in "0123456789." else
    ord("e") if chr(b) in "eE" else
    ord("s") if chr(b) in "+-" else ord(" ")
    for b in range(256)
)


@dataclass(frozen=True, slots=True)
class JsonLimits:
    max_depth: int = 32
    max_number_chars: int = 40  # digits and point of a number's mantissa (sign, exponent aside)


class _Refused:
    """Stands in the tree where a value was refused, so the walk can find where."""

    __slots__ = ("code", "detail")

    def __init__(self, code: str, detail: str) -> None:
        self.code = code
        self.detail = detail


class _DuplicateKeys(dict[str, Any]):
    __slots__ = ("key",)
    key: str


class _Parse:
    """Hooks for one json.loads call; they record the first refusal and carry on."""

    __slots__ = ("limits", "refused")

    def __init__(self, limits: JsonLimits) -> None:
        self.limits = limits
        self.refused = False

    def pairs(self, pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        obj = dict(pairs)
        if len(obj) != len(pairs):
            self.refused = True
            dup = _DuplicateKeys(obj)
            seen: set[str] = set()
            for key, _ in pairs:
                if key in seen:
                    dup.key = key
                    break
                seen.add(key)
            return dup
        return obj

    def integer(self, text: str) -> int | _Refused:
        if len(text.lstrip("-")) > self.limits.max_number_chars:
            self.refused = True
            return _Refused("number_too_large", "number has too many digits")
        return int(text)

    def real(self, text: str) -> float | _Refused:
        mantissa = text.lstrip("-").split("e")[0].split("E")[0]
        if len(mantissa) > self.limits.max_number_chars:
            self.refused = True
            return _Refused("number_too_large", "number has too many digits")
        value = float(text)
        if not math.isfinite(value):
            self.refused = True
            return _Refused("number_too_large", "number is out of range")
        return value

    def constant(self, text: str) -> _Refused:
        self.refused = True
        return _Refused("malformed_json", f"{text[:10]} is not JSON")


def parse_json(body: bytes, limits: JsonLimits) -> Any:
    """The parsed body, or raise Problem (400) saying what and, when known, where."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise Problem.bad("malformed_json", "body is not UTF-8") from None
    if text.startswith("\ufeff"):
        raise Problem.bad("malformed_json", "body starts with a byte order mark")
    hooks = _Parse(limits)
    classes = body.translate(_NUMBER_CLASS)
    screen = b"0" * (limits.max_number_chars + 1) in classes or b"e000" in classes or (
        b"es000" in classes
    )
    try:
        value = json.loads(
            text,
            object_pairs_hook=hooks.pairs,
            parse_int=hooks.integer if screen else None,
            parse_float=hooks.real if screen else None,
            parse_constant=hooks.constant,
        )
    except RecursionError:
        raise Problem.bad("nesting_too_deep", "JSON nesting is too deep") from None
    except json.JSONDecodeError as exc:
        # The position is ours to give (a character offset); the text is not echoed.
        raise Problem.bad("malformed_json", f"{exc.msg} at character {exc.pos}") from None
    except ValueError:  # int() beyond sys.get_int_max_str_digits, were the limit raised
        raise Problem.bad("number_too_large", "number has too many digits") from None
    if body.count(b"[") + body.count(b"{") > limits.max_depth and _depth(body) > limits.max_depth:
        raise Problem.bad("nesting_too_deep", f"JSON nesting exceeds {limits.max_depth} levels")
    if hooks.refused:
        _raise_refusal(value)
    if b"\\ud" in body or b"\\uD" in body:
        _refuse_lone_surrogates(value)  # escapes can produce what UTF-8 cannot carry
    return value


def _refuse_lone_surrogates(value: Any) -> None:
    stack: list[tuple[Any, tuple[str | int, ...]]] = [(value, ())]
    while stack:
        node, path = stack.pop()
        if isinstance(node, dict):
            for key, item in node.items():
                _utf8(key, (*path, "?"))
                stack.append((item, (*path, key)))
        elif isinstance(node, list):
            stack.extend((item, (*path, i)) for i, item in enumerate(node))
        elif isinstance(node, str):
            _utf8(node, path)


def _utf8(text: str, path: tuple[str | int, ...]) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise Problem.bad(
            "malformed_json", "string has an unpaired surrogate escape", pointer=pointer_of(path)
        ) from None


def _depth(body: bytes) -> int:
    structure = _ESCAPE.sub(b"", body).translate(None, _NOT_STRUCTURAL)
    brackets = _STRING.sub(b"", structure)
    return max(accumulate(map(_DEPTH_STEP.__getitem__, brackets)), default=0)


def _raise_refusal(value: Any) -> None:
    """Find the first refused value (depth-first, document order) and raise its Problem."""
    stack: list[tuple[Any, tuple[str | int, ...]]] = [(value, ())]
    while stack:
        node, path = stack.pop()
        if isinstance(node, _Refused):
            raise Problem.bad(node.code, node.detail, pointer=pointer_of(path))
        if isinstance(node, _DuplicateKeys):
            raise Problem.bad(
                "duplicate_key", "object has a repeated key", pointer=pointer_of((*path, node.key))
            )
        if isinstance(node, dict):
            stack.extend((v, (*path, k)) for k, v in reversed(node.items()))
        elif isinstance(node, list):
            stack.extend((v, (*path, i)) for i, v in reversed(list(enumerate(node))))
    raise Problem.bad("malformed_json", "body refused")  # unreachable: a refusal was recorded
