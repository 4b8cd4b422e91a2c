"""Config files: YAML -> pydantic model, with errors that name file, line and reason."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

import pydantic

from tollgate._yaml import YamlDocument, YamlError, line_of, load_yaml, release

T = TypeVar("T")


class ConfigError(Exception):
    """A config file that cannot be used; `str()` reads `file:line: reason`.

    Not a frozen dataclass: Python itself assigns an exception's __traceback__
    (re-raising through a context manager does), which a frozen one refuses.
    """

    def __init__(self, file: str, line: int | None, reason: str) -> None:
        super().__init__(file, line, reason)
        self._where = (file, line, reason)

    @property
    def file(self) -> str:
        return self._where[0]

    @property
    def line(self) -> int | None:
        return self._where[1]

    @property
    def reason(self) -> str:
        return self._where[2]

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        return f"{where}: {self.reason}"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ConfigError) and self._where == other._where

    def __hash__(self) -> int:
        return hash(self._where)


@dataclass(frozen=True)
class ConfigNote:
    """A warning about a config that loads; `str()` reads `file:line: reason` too."""

    file: str
    line: int | None
    reason: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        return f"{where}: {self.reason}"


@dataclass
class Advice(Generic[T]):
    """Asks a built config for warnings while its document's lines are still known.

    `check` yields (document path, reason); `found` collects them as ConfigNotes.
    """

    check: Callable[[T], Iterable[tuple[tuple[str | int, ...], str]]]
    found: list[ConfigNote] = field(default_factory=list)

    def note(self, result: T, file: str, lines: dict[tuple[str | int, ...], int]) -> None:
        for path, reason in self.check(result):
            where = _loc_text(path)
            text = f"{where}: {reason}" if where else reason
            self.found.append(ConfigNote(file, line_of(lines, path), text))


def _loc_text(loc: tuple[Any, ...]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        else:
            parts.append(("." if parts else "") + str(item))
    return "".join(parts)


def parse_config_text(
    text: str,
    file: str,
    build: Callable[[Any], T],
    advice: Advice[T] | None = None,
) -> T:
    """Parse YAML text and build a config object; raise ConfigError with a location.

    `build` is usually `Model.model_validate` followed by compilation; it may raise
    pydantic.ValidationError (mapped to the line of the failing key) or
    ConfigError-like `LocatedError` for semantic checks done after validation.
    """
    error: ConfigError
    try:
        doc = load_yaml(text)
    except YamlError as exc:
        error = ConfigError(file, exc.line, exc.reason)
    else:
        result = _build_located(doc, file, build)
        if advice is not None and not isinstance(result, ConfigError):
            advice.note(result, file, doc.lines)
        release(doc.lines)  # ours alone (a built config may share parts of doc.data)
        if not isinstance(result, ConfigError):
            return result
        release(doc.data)  # a rejected document is dropped: a piece at a time
        del doc
        error = result
    # Raised here, outside the handlers and without the document in this frame: a
    # rejected reload keeps its ConfigError as last_error, and a __context__ (the
    # pydantic error, its traceback, their frames) would keep the whole document.
    raise error


def _build_located(doc: YamlDocument, file: str, build: Callable[[Any], T]) -> T | ConfigError:
    try:
        return build(doc.data)
    except pydantic.ValidationError as exc:
        errors = exc.errors(include_url=False)
        err = errors[0]
        loc = tuple(err["loc"])
        # pydantic adds the union member / discriminator names into loc; keep the
        # parts that exist in the document for the line lookup.
        line = line_of(doc.lines, _document_path(loc, doc.data))
        said = _said_path(loc, doc.data, missing=err["type"] == "missing")
        reason = _union_words(errors, said, doc.data) or _our_words(err)
        where = _loc_text(said)
        return ConfigError(file, line, f"{where}: {reason}" if where else reason)
    except LocatedError as exc:
        line = line_of(doc.lines, exc.path)
        where = _loc_text(exc.path)
        return ConfigError(file, line, f"{where}: {exc.reason}" if where else exc.reason)


_PATTERN_WORDS: dict[str, str] = {}


def worded_pattern(pattern: str, words: str) -> str:
    """`pattern`, registered so a value that does not match it is said to be not `words`."""
    _PATTERN_WORDS[pattern] = words
    return pattern


_EXPECTED = {
    "string_type": "text",
    "int_type": "a whole number",
    "int_parsing": "a whole number",
    "int_from_float": "a whole number",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "list_type": "a list",
    "tuple_type": "a list",
    "set_type": "a list",
    "dict_type": "a mapping (key: value)",
    "model_type": "a mapping (key: value)",
    "model_attributes_type": "a mapping (key: value)",
}
_BOUNDS = {
    "greater_than": ("gt", "greater than"),
    "greater_than_equal": ("ge", "at least"),
    "less_than": ("lt", "less than"),
    "less_than_equal": ("le", "at most"),
}


def _union_words(errors: list[Any], said: tuple[Any, ...], data: Any) -> str | None:
    """A value that fits none of a union's kinds (`list[str] | str`): pydantic reports
    one error per kind; say them as one, 'expected a list or text, found ...'."""
    same = [e for e in errors if len(e["loc"]) > len(said)
            and _said_path(tuple(e["loc"]), data, missing=False) == said]
    kinds = list(dict.fromkeys(_EXPECTED.get(e["type"], "") for e in same))
    if len(same) < 2 or len(same) != len(errors) or "" in kinds:
        return None
    return f"expected {' or '.join(kinds)}, found {_yaml_kind(same[0].get('input'))}"


def _yaml_kind(value: Any) -> str:
    """What a YAML reader calls the value that was found."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"'{str(value).lower()}'"
    if isinstance(value, int | float):
        return f"the number {value}"
    if isinstance(value, str):
        return f"the text '{value}'" if len(value) <= 40 else "text"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def _our_words(err: Any) -> str:
    """pydantic's error in the terms of a YAML file (never its class or type names)."""
    kind: str = err["type"]
    message: str = err["msg"]
    loc: tuple[Any, ...] = tuple(err["loc"])
    ctx: dict[str, Any] = err.get("ctx") or {}
    if kind == "extra_forbidden":
        return f"unknown key '{loc[-1]}'"
    if kind == "missing":
        return f"missing required key '{loc[-1]}'"
    if kind in ("value_error", "assertion_error"):
        return message.removeprefix("Value error, ").removeprefix("Assertion failed, ")
    if kind in _EXPECTED:
        return f"expected {_EXPECTED[kind]}, found {_yaml_kind(err.get('input'))}"
    if kind in _BOUNDS:
        key, words = _BOUNDS[kind]
        return f"must be {words} {ctx.get(key)}, found {err.get('input')}"
    if kind == "literal_error":
        return f"must be {ctx.get('expected')}, found {_yaml_kind(err.get('input'))}"
    if kind == "string_too_short":
        least = ctx.get("min_length", 1)
        return "must not be empty" if least == 1 else f"needs at least {least} characters"
    if kind == "string_too_long":
        return f"has more than {ctx.get('max_length')} characters"
    if kind == "too_short":
        return f"needs at least {ctx.get('min_length')} item(s)"
    if kind == "too_long":
        return f"has more than {ctx.get('max_length')} items"
    if kind == "string_pattern_mismatch":
        pattern = str(ctx.get("pattern"))
        words = _PATTERN_WORDS.get(pattern, f"of the form {pattern}")
        return f"'{err.get('input')}' is not {words}"
    return message


def _document_path(loc: tuple[Any, ...], data: Any) -> tuple[str | int, ...]:
    """The longest prefix of a pydantic error location that exists in the document.

    pydantic inserts union member names into locations and reports a missing key
    at the key itself; both are skipped so the line is that of the enclosing node.
    """
    path: list[str | int] = []
    node = data
    for part in loc:
        in_dict = isinstance(node, dict) and part in node
        in_list = isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
        if in_dict or in_list:
            node = node[part]
            path.append(part)
    return tuple(path)


def _said_path(loc: tuple[Any, ...], data: Any, *, missing: bool) -> tuple[Any, ...]:
    """The error location as the file says it: without the union member names pydantic
    adds (`list[str]`, `literal['any']`), which are keys no document has. Indexes stay
    (a value a model turns into a list is reported at [0]), and so does a missing key."""
    said: list[Any] = []
    node = data
    for pos, part in enumerate(loc):
        in_dict = isinstance(node, dict) and part in node
        in_list = isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
        if in_dict or in_list:
            node = node[part]
        elif isinstance(part, str) and not (missing and pos == len(loc) - 1):
            continue
        said.append(part)
    return tuple(said)


class LocatedError(ValueError):
    """A semantic config error found after schema validation, at a document path."""

    def __init__(self, path: tuple[str | int, ...], reason: str) -> None:
        super().__init__(reason)
        self.path = path
        self.reason = reason


def load_config_file(
    path: str | Path, build: Callable[[Any], T], advice: Advice[T] | None = None
) -> T:
    """Read and build a config file; every failure is a ConfigError naming the file.

    With `advice`, its warnings about the built config are collected in `advice.found`.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(str(p), None, "file not found") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(str(p), None, f"not UTF-8 text: {exc.reason}") from None
    except OSError as exc:
        raise ConfigError(str(p), None, f"cannot read: {exc.strerror}") from None
    return parse_config_text(text, str(p), build, advice)
