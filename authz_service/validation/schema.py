"""JSON Schema (draft 2020-12) validation of a parsed body, compiled once.

The validator is jsonschema-rs (Rust): on the typical 1 KB body it costs ~4 µs
against ~300 µs for jsonschema and it bounds regex backtracking (a `pattern`
cannot be turned into ReDoS by the client's input); see bench/schema_bench.py.
No `$ref` is ever fetched: a reference outside the schema (or its OpenAPI
document) fails compilation, which is a config error.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from authz_service.validation.problems import Problem, pointer_of

if TYPE_CHECKING:
    import jsonschema_rs  # loaded with the first schema: a config without any saves ~3 MB

DRAFT_2020_12 = "https://json-schema.org/draft/2020-12/schema"


class SchemaError(ValueError):
    """The schema itself is unusable; the message is the config error's reason."""


def _no_fetch(uri: str) -> Any:
    raise ValueError(f"external $ref '{uri}' is not allowed (schemas are never fetched)")


def _first_line(error: Exception) -> str:
    return str(getattr(error, "message", error)).splitlines()[0]


class JsonSchema:
    """A compiled schema; `check` raises Problem(400 schema_violation) with a pointer."""

    __slots__ = ("_validator", "code", "prefix")

    def __init__(
        self, schema: Any, *, code: str = "schema_violation", prefix: str = ""
    ) -> None:
        import jsonschema_rs  # noqa: PLC0415 - see the module's imports

        if isinstance(schema, Mapping):
            dialect = schema.get("$schema", DRAFT_2020_12)
            if dialect.rstrip("#") != DRAFT_2020_12:
                raise SchemaError(f"$schema must be {DRAFT_2020_12} (draft 2020-12)")
            try:
                jsonschema_rs.meta.validate(dict(schema))
            except jsonschema_rs.ValidationError as exc:
                where = pointer_of(exc.instance_path) or "/"
                raise SchemaError(f"invalid schema at {where}: {_first_line(exc)}") from None
        elif not isinstance(schema, bool):
            raise SchemaError("a schema is an object (or true/false)")
        try:
            self._validator = jsonschema_rs.validator_for(
                schema, validate_formats=True, retriever=_no_fetch
            )
        except (jsonschema_rs.ValidationError, ValueError) as exc:
            raise SchemaError(f"invalid schema: {_first_line(exc)}") from None
        self.code = code
        self.prefix = prefix  # pointer prefix of the value within what the client sent

    def check(self, instance: Any) -> None:
        if self._validator.is_valid(instance):
            return
        error = next(iter(self._validator.iter_errors(instance)))
        raise Problem.bad(self.code, describe(error), pointer=self.prefix + _pointer(error))

    def first_error(self, instance: Any) -> tuple[str, str] | None:
        """(pointer, detail) of the first violation, or None; for parameters."""
        if self._validator.is_valid(instance):
            return None
        error = next(iter(self._validator.iter_errors(instance)))
        return _pointer(error), describe(error)


def _pointer(error: jsonschema_rs.ValidationError) -> str:
    import jsonschema_rs  # noqa: PLC0415 - see the module's imports

    path = list(error.instance_path)
    kind = error.kind
    if isinstance(kind, jsonschema_rs.ValidationErrorKind.Required):
        path.append(str(kind.property))
    elif isinstance(kind, jsonschema_rs.ValidationErrorKind.AdditionalProperties):
        path.extend(str(name) for name in kind.unexpected[:1])  # client's name, clipped later
    return pointer_of(path)


def describe(error: jsonschema_rs.ValidationError) -> str:
    """What failed, in words from the schema: never the client's value."""
    import jsonschema_rs  # noqa: PLC0415 - see the module's imports

    kind = error.kind
    keyword = next((p for p in reversed(error.schema_path) if isinstance(p, str)), "schema")
    if isinstance(kind, jsonschema_rs.ValidationErrorKind.Required):
        return f"missing required property '{kind.property}'"
    if isinstance(kind, jsonschema_rs.ValidationErrorKind.Type):
        return f"wrong type (expected {_types(kind)})"
    if isinstance(
        kind,
        jsonschema_rs.ValidationErrorKind.AdditionalProperties
        | jsonschema_rs.ValidationErrorKind.UnevaluatedProperties,
    ):
        return "property not allowed by the schema"
    if isinstance(kind, jsonschema_rs.ValidationErrorKind.Format):
        return f"not a valid '{kind.format}'"
    if isinstance(kind, jsonschema_rs.ValidationErrorKind.BacktrackLimitExceeded):
        return "pattern could not be evaluated within limits"
    return f"fails '{keyword}'"


def _types(kind: Any) -> str:
    types = getattr(kind, "types", None)
    if types is None:
        return "another type"
    if isinstance(types, str):
        return types
    return " or ".join(str(t) for t in types)
