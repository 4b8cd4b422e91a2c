"""OpenAPI 3.0 / 3.1 request validation: operation by method + path template, then
path, query and header parameters and the JSON body, each against its schema.

Compiled once from the document: every operation's schemas become jsonschema-rs
validators whose `$ref`s resolve inside the document (and nowhere else). 3.0
schemas are rewritten to their 2020-12 meaning first (`nullable`, boolean
`exclusiveMinimum`/`exclusiveMaximum`). Supported parameter styles: path
`simple`, query `form` (exploded or not), header `simple`; primitive or array
values. Cookie parameters and object-valued parameters are a config error, so
nothing is silently left unchecked.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, quote, unquote

from authz_service.validation.problems import Problem, pointer_of
from authz_service.validation.schema import JsonSchema, SchemaError

METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
_VAR = re.compile(r"\{([^{}/]+)\}")
_INT = re.compile(r"-?[0-9]{1,40}")
_NUMBER = re.compile(r"-?[0-9]{1,40}(\.[0-9]{1,40})?([eE][-+]?[0-9]{1,3})?")
MAX_QUERY_FIELDS = 256


@dataclass(frozen=True, slots=True)
class Parameter:
    name: str
    location: str  # path | query | header
    required: bool
    kind: str  # the schema's type, for coercing the string: integer, number, boolean, array...
    item_kind: str
    explode: bool
    schema: JsonSchema | None

    @property
    def label(self) -> str:
        return f"{self.location}:{self.name}"


@dataclass(frozen=True, slots=True)
class Operation:
    method: str
    template: str
    regex: re.Pattern[str]
    literal: bool
    parameters: tuple[Parameter, ...]
    body_required: bool
    body_types: tuple[str, ...]  # media types the operation accepts (empty: no body)
    body_schema: JsonSchema | None  # for the JSON one, when it has a schema

    def header_names(self) -> frozenset[str]:
        return frozenset(
            p.name for p in self.parameters if p.location == "header" and p.kind != "array"
        )


def _ref_path(ref: str) -> tuple[str, ...]:
    """`#/components/schemas/A~1B` -> ("components", "schemas", "A/B")."""
    return tuple(t.replace("~1", "/").replace("~0", "~") for t in ref[2:].split("/"))


def _to_2020(node: Any) -> Any:
    """OpenAPI 3.0 schema dialect -> JSON Schema 2020-12, recursively (a copy)."""
    if isinstance(node, list):
        return [_to_2020(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: _to_2020(v) for k, v in node.items()}
    if out.pop("nullable", False) is True:
        if isinstance(out.get("type"), str):
            out["type"] = [out["type"], "null"]
        if isinstance(out.get("enum"), list) and None not in out["enum"]:
            out["enum"] = [*out["enum"], None]  # 3.0: nullable admits null past an enum too
    for bound, exclusive in (("minimum", "exclusiveMinimum"), ("maximum", "exclusiveMaximum")):
        flag = out.get(exclusive)
        if isinstance(flag, bool):
            del out[exclusive]
            if flag and bound in out:
                out[exclusive] = out.pop(bound)
    return out


class OpenApiDocument:
    """The operations of one document; `find` picks one, `check` validates a request."""

    def __init__(self, doc: Any, base_path: str = "") -> None:
        if not isinstance(doc, Mapping) or not isinstance(doc.get("openapi"), str):
            raise SchemaError("not an OpenAPI document (no 'openapi' version)")
        version = doc["openapi"]
        if not (version.startswith("3.0.") or version.startswith("3.1.")):
            raise SchemaError(f"OpenAPI {version} is not supported (3.0.x or 3.1.x)")
        self._root: dict[str, Any] = (
            _to_2020(doc) if version.startswith("3.0.") else copy.deepcopy(dict(doc))
        )
        self._root.pop("$schema", None)
        self._root.pop("$id", None)
        self.base_path = base_path.rstrip("/")
        paths = self._root.get("paths")
        if not isinstance(paths, Mapping) or not paths:
            raise SchemaError("the document has no paths")
        operations: list[Operation] = []
        for template, raw_item in paths.items():
            if not isinstance(template, str) or not template.startswith("/"):
                raise SchemaError(f"path '{template}' must start with '/'")
            item = self._resolve(raw_item)
            # Schemas are compiled by their pointer: where the path item really is.
            base: tuple[str, ...] = ("paths", template)
            if isinstance(raw_item, Mapping) and isinstance(raw_item.get("$ref"), str):
                base = _ref_path(raw_item["$ref"])
            for method in METHODS:
                if method in item:
                    operations.append(self._operation(method, template, item, base))
        # Literal paths win over templated ones (OpenAPI 3: concrete paths match first).
        self.operations = tuple(sorted(operations, key=lambda o: not o.literal))

    # --- compiling ---------------------------------------------------------------

    def _resolve(self, node: Any) -> Any:
        """Follow a local `$ref` (components, path items, parameters); never a remote one."""
        seen = 0
        while isinstance(node, Mapping) and "$ref" in node:
            ref = node["$ref"]
            if not isinstance(ref, str) or not ref.startswith("#/"):
                raise SchemaError(f"only local $refs are allowed, not '{ref}'")
            node = self._root
            for part in _ref_path(ref):
                if not isinstance(node, Mapping) or part not in node:
                    raise SchemaError(f"$ref '{ref}' does not resolve")
                node = node[part]
            seen += 1
            if seen > 32:
                raise SchemaError("$ref chain too long")
        return node

    def _schema(self, where: tuple[str, ...], code: str, prefix: str = "") -> JsonSchema:
        # The document is the root resource: unknown keywords (paths, info, ...) are
        # ignored and `#/components/...` references resolve against it.
        root = {**self._root, "$ref": "#" + quote(pointer_of(where), safe="/~")}
        try:
            return JsonSchema(root, code=code, prefix=prefix)
        except SchemaError as exc:
            raise SchemaError(f"{'/'.join(where)}: {exc}") from None

    def _operation(
        self, method: str, template: str, item: Mapping[str, Any], base: tuple[str, ...]
    ) -> Operation:
        spec = item[method]
        where = (*base, method)
        params: dict[tuple[str, str], Parameter] = {}
        for origin, entries in (
            ((*base, "parameters"), item.get("parameters", [])),
            ((*where, "parameters"), spec.get("parameters", [])),
        ):
            for index, raw in enumerate(entries):
                param = self._parameter(raw, (*origin, str(index)))
                params[(param.location, param.name)] = param
        names = _VAR.findall(template)
        for name in names:
            if ("path", name) not in params:
                raise SchemaError(f"{template}: path parameter '{name}' is not declared")
        body_types: tuple[str, ...] = ()
        body_schema = None
        body_required = False
        if "requestBody" in spec:
            body = self._resolve(spec["requestBody"])
            content = body.get("content", {})
            body_types = tuple(str(k).lower() for k in content)
            body_required = bool(body.get("required", False))
            for kind in content:
                lowered = str(kind).lower()
                if lowered == "application/json" or lowered.endswith("+json"):
                    if "schema" in content[kind]:
                        ref_where = (*where, "requestBody", "content", str(kind), "schema")
                        if "$ref" in spec["requestBody"]:
                            ref = _ref_path(spec["requestBody"]["$ref"])
                            ref_where = (*ref, "content", str(kind), "schema")
                        body_schema = self._schema(ref_where, "schema_violation")
                    break
        pattern = ""
        pos = 0
        for var in _VAR.finditer(template):
            pattern += re.escape(template[pos : var.start()]) + "([^/]+)"
            pos = var.end()
        pattern += re.escape(template[pos:])
        return Operation(
            method=method.upper(),
            template=template,
            regex=re.compile(re.escape(self.base_path) + pattern),
            literal=not names,
            parameters=tuple(params.values()),
            body_required=body_required,
            body_types=body_types,
            body_schema=body_schema,
        )

    def _parameter(self, raw: Any, where: tuple[str, ...]) -> Parameter:
        if isinstance(raw, Mapping) and isinstance(raw.get("$ref"), str):
            where = _ref_path(raw["$ref"])
        spec = self._resolve(raw)
        name, location = spec.get("name"), spec.get("in")
        if not isinstance(name, str) or location not in ("path", "query", "header", "cookie"):
            raise SchemaError(f"{'/'.join(where)}: a parameter needs 'name' and 'in'")
        if location == "cookie":
            raise SchemaError(f"{'/'.join(where)}: cookie parameters are not supported")
        if "content" in spec:
            raise SchemaError(f"{'/'.join(where)}: 'content' parameters are not supported")
        style = spec.get("style", "form" if location == "query" else "simple")
        if style not in ("form", "simple"):
            raise SchemaError(f"{'/'.join(where)}: parameter style '{style}' is not supported")
        schema_spec = self._resolve(spec.get("schema", {}))
        kind = schema_spec.get("type", "") if isinstance(schema_spec, Mapping) else ""
        if isinstance(kind, list):
            kind = next((k for k in kind if k != "null"), "")
        if kind == "object":
            raise SchemaError(f"{'/'.join(where)}: object-valued parameters are not supported")
        items = self._resolve(schema_spec.get("items", {})) if kind == "array" else {}
        item_kind = items.get("type", "") if isinstance(items, Mapping) else ""
        schema = self._schema((*where, "schema"), "invalid_parameter") if "schema" in spec else None
        if location == "header":
            name = name.lower()
        return Parameter(
            name=name,
            location=location,
            required=bool(spec.get("required", location == "path")),
            kind=str(kind),
            item_kind=str(item_kind),
            explode=bool(spec.get("explode", style == "form")),
            schema=schema,
        )

    # --- deciding ---------------------------------------------------------------

    def find(self, method: str, path: str) -> tuple[Operation, dict[str, str]]:
        """The operation for this request and its raw path values; Problem 404/405 if none."""
        path_known = False
        for op in self.operations:
            match = op.regex.fullmatch(path)
            if match is None:
                continue
            if op.method == method:
                names = _VAR.findall(op.template)
                return op, dict(zip(names, match.groups(), strict=True))
            path_known = True
        if path_known:
            raise Problem.bad(
                "method_not_allowed", "the API has no such operation on this path", status=405
            )
        raise Problem.bad("unknown_operation", "the API has no operation at this path", status=404)

    def check_parameters(
        self, op: Operation, path_values: Mapping[str, str], query: str, headers: Mapping[str, str]
    ) -> None:
        try:
            pairs = parse_qsl(query, keep_blank_values=True, max_num_fields=MAX_QUERY_FIELDS)
        except ValueError:
            raise Problem.bad("too_many_parameters", "too many query parameters") from None
        query_values: dict[str, list[str]] = {}
        for key, value in pairs:
            query_values.setdefault(key, []).append(value)
        for param in op.parameters:
            raw: list[str] | None
            if param.location == "path":
                raw = [unquote(path_values[param.name])] if param.name in path_values else None
            elif param.location == "query":
                raw = query_values.get(param.name)
            else:
                raw = [headers[param.name]] if param.name in headers else None
            if raw is None:
                if param.required:
                    raise Problem.bad(
                        "missing_parameter", "required parameter is missing", parameter=param.label
                    )
                continue
            value = _coerce(param, raw)
            if param.schema is not None:
                failure = param.schema.first_error(value)
                if failure is not None:
                    raise Problem.bad("invalid_parameter", failure[1], parameter=param.label)


def _scalar(kind: str, text: str) -> Any:
    if kind == "integer" and _INT.fullmatch(text):
        return int(text)
    if kind == "number" and _NUMBER.fullmatch(text):
        return float(text)
    if kind == "boolean" and text in ("true", "false"):
        return text == "true"
    return text  # left a string: the schema's `type` refuses it


def _coerce(param: Parameter, raw: list[str]) -> Any:
    if param.kind == "array":
        if param.location == "query" and param.explode:
            items = raw
        else:
            items = [part for value in raw for part in value.split(",")]
        return [_scalar(param.item_kind, v) for v in items]
    if len(raw) > 1:
        raise Problem.bad(
            "duplicate_parameter", "parameter must be sent once", parameter=param.label
        )
    return _scalar(param.kind, raw[0])
