"""Config files: YAML -> pydantic model, with errors that name file, line and reason."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

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
        err = exc.errors(include_url=False)[0]
        loc = tuple(err["loc"])
        # pydantic adds the union member / discriminator names into loc; keep the
        # parts that exist in the document for the line lookup.
        line = line_of(doc.lines, _document_path(loc, doc.data))
        reason = _our_words(err["type"], err["msg"], loc)
        where = _loc_text(loc)
        return ConfigError(file, line, f"{where}: {reason}" if where else reason)
    except LocatedError as exc:
        line = line_of(doc.lines, exc.path)
        where = _loc_text(exc.path)
        return ConfigError(file, line, f"{where}: {exc.reason}" if where else exc.reason)


def _our_words(kind: str, message: str, loc: tuple[Any, ...]) -> str:
    """pydantic's message in the terms of a YAML file."""
    if kind == "extra_forbidden":
        return f"unknown key '{loc[-1]}'"
    if kind == "missing":
        return f"missing required key '{loc[-1]}'"
    if kind in ("value_error", "assertion_error"):
        return message.removeprefix("Value error, ").removeprefix("Assertion failed, ")
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


class LocatedError(ValueError):
    """A semantic config error found after schema validation, at a document path."""

    def __init__(self, path: tuple[str | int, ...], reason: str) -> None:
        super().__init__(reason)
        self.path = path
        self.reason = reason


def load_config_file(path: str | Path, build: Callable[[Any], T]) -> T:
    """Read and build a config file; every failure is a ConfigError naming the file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(str(p), None, "file not found") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(str(p), None, f"not UTF-8 text: {exc.reason}") from None
    except OSError as exc:
        raise ConfigError(str(p), None, f"cannot read: {exc.strerror}") from None
    return parse_config_text(text, str(p), build)
