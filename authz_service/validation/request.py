"""A route's request validation: headers, then (OpenAPI) operation and parameters,
then body framing, JSON parsing and the schema. Built once by `compile_validation`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from authz_service.config import Validation
from authz_service.models import RequestContext
from authz_service.validation.body_limits import BodyLimits, media_type_matches
from authz_service.validation.header_checks import SINGLE_VALUED, HeaderRules
from authz_service.validation.json_body import JsonLimits, parse_json
from authz_service.validation.openapi import OpenApiDocument
from authz_service.validation.problems import Problem, ProblemDetail
from authz_service.validation.schema import JsonSchema, SchemaError
from tollgate._yaml import YamlError, load_yaml

JSON_TYPES = ("application/json", "application/*+json")
INVALID = object()  # body_document: the request fails validation


@dataclass(frozen=True, slots=True)
class RequestValidator:
    headers: HeaderRules
    body: BodyLimits
    json: JsonLimits
    schema: JsonSchema | None
    body_required: bool
    openapi: OpenApiDocument | None

    def refusal(self, ctx: RequestContext) -> ProblemDetail | None:
        """None when the request is well formed; else what is wrong, and where."""
        try:
            self._check(ctx)
        except Problem as problem:
            return problem.detail
        return None

    def body_document(self, ctx: RequestContext) -> Any:
        """The request's JSON body once the whole request passes validation (what a CEL
        condition sees as `request.body`): None without a JSON body; INVALID when the
        request would be refused."""
        if self.refusal(ctx) is not None:
            return INVALID
        kind = ctx.headers.get("content-type", "").split(";")[0].strip().lower()
        if not ctx.body or not media_type_matches(kind, JSON_TYPES):
            return None
        return parse_json(ctx.body, self.json)

    def _check(self, ctx: RequestContext) -> None:
        self.headers.check(ctx)
        if self.openapi is None:
            if self.body.check(ctx, required=self.body_required):
                value = parse_json(ctx.body, self.json)
                if self.schema is not None:
                    self.schema.check(value)
            return
        op, path_values = self.openapi.find(ctx.method, ctx.path)
        singles = op.header_names()  # a header parameter that is not an array
        if singles:
            HeaderRules(self.headers.max_value_bytes, singles).check(ctx)
        self.openapi.check_parameters(op, path_values, ctx.query, ctx.headers)
        if not op.body_types:
            if ctx.body:
                raise Problem.bad("body_not_allowed", "this operation takes no body")
            return
        limits = BodyLimits(self.body.max_bytes, op.body_types)
        if not limits.check(ctx, required=op.body_required):
            return
        kind = ctx.headers.get("content-type", "").split(";")[0].strip().lower()
        if op.body_schema is not None and media_type_matches(kind, JSON_TYPES):
            op.body_schema.check(parse_json(ctx.body, self.json))


def _read_document(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SchemaError(f"file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SchemaError(f"cannot read {path}: {exc}") from None
    if path.suffix == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise SchemaError(f"{path}:{exc.lineno}: invalid JSON: {exc.msg}") from None
    try:
        return load_yaml(text).data  # duplicate keys refused, line numbers kept
    except YamlError as exc:
        raise SchemaError(f"{path}:{exc.line}: {exc.reason}") from None


def compile_validation(spec: Validation, base_dir: Path) -> RequestValidator:
    """Raise SchemaError (the config error's reason) if a schema or document is unusable."""
    schema = None
    openapi = None
    if isinstance(spec.json_schema, str):
        path = base_dir / spec.json_schema
        try:
            schema = JsonSchema(_read_document(path))
        except SchemaError as exc:
            raise SchemaError(f"{spec.json_schema}: {exc}") from None
    elif spec.json_schema is not None:
        schema = JsonSchema(spec.json_schema)
    if spec.openapi is not None:
        path = base_dir / spec.openapi.file
        try:
            openapi = OpenApiDocument(_read_document(path), spec.openapi.base_path)
        except SchemaError as exc:
            raise SchemaError(f"{spec.openapi.file}: {exc}") from None
    return RequestValidator(
        headers=HeaderRules(spec.max_header_value_bytes, SINGLE_VALUED | set(spec.single_headers)),
        body=BodyLimits(spec.max_body_bytes, tuple(t.lower() for t in spec.content_types)),
        json=JsonLimits(spec.max_depth, spec.max_number_chars),
        schema=schema,
        body_required=spec.body_required and schema is not None,
        openapi=openapi,
    )
