"""Request validation, pure: limits, parser refusals, schema keyword families, OpenAPI."""

from __future__ import annotations

import json
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import urlencode

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from authz_service.config import Validation
from authz_service.models import RequestContext
from authz_service.validation.json_body import JsonLimits, parse_json
from authz_service.validation.problems import Problem, ProblemDetail
from authz_service.validation.request import RequestValidator, compile_validation
from authz_service.validation.schema import JsonSchema, SchemaError

FIXTURES = Path(__file__).parent / "fixtures"
JSON = {"content-type": "application/json"}


def ctx(  # noqa: PLR0917 (reads like the request line)
    method: str = "POST",
    path: str = "/orders",
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    query: str = "",
    duplicates: frozenset[str] = frozenset(),
) -> RequestContext:
    return RequestContext(
        method=method,
        path=path,
        query=query,
        headers=MappingProxyType({**JSON, **(headers or {})} if body else dict(headers or {})),
        duplicate_headers=duplicates,
        body=body,
    )


def validator(**spec: Any) -> RequestValidator:
    return compile_validation(Validation.model_validate(spec), FIXTURES)


def refusal(v: RequestValidator, request: RequestContext) -> ProblemDetail:
    problem = v.refusal(request)
    assert problem is not None, "expected a refusal"
    return problem


DEFAULT_LIMITS = JsonLimits()


def parse_refusal(body: bytes, limits: JsonLimits = DEFAULT_LIMITS) -> ProblemDetail:
    with pytest.raises(Problem) as info:
        parse_json(body, limits)
    return info.value.detail


# --- the parser: bounded refusals -------------------------------------------------


def test_nesting_bomb_is_refused() -> None:
    assert parse_refusal(b"[" * 65536).code == "nesting_too_deep"
    assert parse_refusal(b'{"a":' * 20000).code == "nesting_too_deep"


def test_nesting_at_the_limit_passes_and_one_over_is_refused() -> None:
    limits = JsonLimits(max_depth=8)
    assert parse_json(b"[" * 8 + b"]" * 8, limits) is not None
    assert parse_refusal(b"[" * 9 + b"]" * 9, limits).code == "nesting_too_deep"


def test_brackets_inside_strings_do_not_count_as_depth() -> None:
    body = json.dumps({"s": "[" * 500}).encode()
    assert parse_json(body, JsonLimits(max_depth=4)) == {"s": "[" * 500}


def test_huge_integer_is_refused_with_its_pointer() -> None:
    problem = parse_refusal(b'{"a": [1, ' + b"9" * 100_000 + b"]}")
    assert (problem.code, problem.pointer) == ("number_too_large", "/a/1")
    assert "999" not in problem.detail


def test_number_limit_counts_the_mantissa_on_both_parse_paths() -> None:
    limits = JsonLimits(max_number_chars=16)
    at_limit = b"[-" + b"9" * 16 + b", 1." + b"5" * 14 + b"e-12]"
    assert len(parse_json(at_limit, limits)) == 2  # fast path: no long digit run
    screened = at_limit[:-1] + b', "' + b"7" * 20 + b'"]'  # a long run in a string
    assert len(parse_json(screened, limits)) == 3  # hooks run, same numbers accepted
    assert parse_refusal(b"[1" + b"0" * 16 + b"]", limits).pointer == "/0"


def test_huge_exponent_and_long_float_are_refused() -> None:
    assert parse_refusal(b'{"x": 1e999}').code == "number_too_large"
    assert parse_refusal(b'{"x": [-1E+400]}').pointer == "/x/0"
    assert parse_json(b'{"x": 1e-5, "y": "' + b"1" * 100 + b'"}', DEFAULT_LIMITS)["x"] == 1e-5
    assert parse_refusal(b'{"x": 1.' + b"5" * 60 + b"}").pointer == "/x"


def test_nan_and_infinity_are_not_json() -> None:
    assert parse_refusal(b'{"x": NaN}').code == "malformed_json"
    assert parse_refusal(b"[-Infinity]").code == "malformed_json"


def test_duplicate_keys_are_refused_with_the_pointer_of_the_repeat() -> None:
    problem = parse_refusal(b'{"items": [{"sku": "A", "qty": 1, "sku": "B"}]}')
    assert (problem.code, problem.pointer) == ("duplicate_key", "/items/0/sku")


def test_unpaired_surrogate_escape_is_refused_and_a_pair_is_not() -> None:
    problem = parse_refusal(b'{"a": ["ok", "x\\ud800y"]}')
    assert (problem.code, problem.pointer) == ("malformed_json", "/a/1")
    assert parse_refusal(b'{"\\udc00": 1}').code == "malformed_json"
    assert parse_json(b'["\\ud83d\\ude00"]', DEFAULT_LIMITS) == ["\U0001F600"]


@pytest.mark.parametrize(
    "body", [b"{", b'{"a":1,}', b"\xff\xfe{}", b"\xef\xbb\xbf{}", b"'x'", b'{"a":1} x']
)
def test_malformed_json_is_refused(body: bytes) -> None:
    assert parse_refusal(body).code == "malformed_json"


# --- framing: size, truncation, media type, headers ---------------------------------

SIMPLE = {"schema": {"type": "object"}}


def test_truncated_body_is_413_never_validated() -> None:
    v = validator(**SIMPLE)
    problem = refusal(v, ctx(body=b"{}", headers={"x-envoy-auth-partial-body": "true"}))
    assert (problem.status, problem.code) == (413, "body_truncated")


def test_a_body_envoy_did_not_buffer_is_refused_not_skipped() -> None:
    v = validator(**SIMPLE, body_required=False)
    for headers in ({"content-length": "120"}, {"transfer-encoding": "chunked"}):
        problem = refusal(v, ctx(headers=headers))
        assert (problem.status, problem.code) == (500, "body_not_buffered")
    assert v.refusal(ctx(headers={"content-length": "0"})) is None
    short = refusal(v, ctx(body=b"{}", headers={"content-length": "10"}))
    assert (short.status, short.code) == (413, "body_truncated")


def test_body_over_the_limit_is_413_even_when_declared_only() -> None:
    v = validator(**SIMPLE, max_body_bytes=16)
    assert refusal(v, ctx(body=b'{"a": "' + b"x" * 20 + b'"}')).status == 413
    declared = ctx(body=b"{}", headers={"content-length": "99999999999999999999"})
    assert refusal(v, declared).code == "body_too_large"


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "", "application/json; charset=latin-1"],
)
def test_wrong_media_type_is_415(content_type: str) -> None:
    problem = refusal(validator(**SIMPLE), ctx(body=b"{}", headers={"content-type": content_type}))
    assert (problem.status, problem.code) == (415, "unsupported_media_type")


def test_media_type_parameters_and_structured_suffix() -> None:
    v = validator(**SIMPLE, content_types=["application/json", "application/*+json"])
    for kind in ("application/json; charset=UTF-8", "application/merge-patch+json"):
        assert v.refusal(ctx(body=b"{}", headers={"content-type": kind})) is None


def test_compressed_body_is_415() -> None:
    problem = refusal(validator(**SIMPLE), ctx(body=b"{}", headers={"content-encoding": "gzip"}))
    assert problem.code == "unsupported_encoding"


def test_missing_body_is_400_when_a_schema_is_set() -> None:
    assert refusal(validator(**SIMPLE), ctx()).code == "body_required"
    assert validator(**SIMPLE, body_required=False).refusal(ctx()) is None


@pytest.mark.parametrize("value", ["a\r\nx-evil: 1", "a\nb", "a\x00b"])
def test_header_with_cr_lf_nul_is_refused_naming_the_header(value: str) -> None:
    problem = refusal(validator(**SIMPLE), ctx(body=b"{}", headers={"x-note": value}))
    assert (problem.code, problem.parameter) == ("bad_header_value", "header:x-note")


def test_oversize_header_value_is_refused() -> None:
    v = validator(**SIMPLE, max_header_value_bytes=256)
    problem = refusal(v, ctx(body=b"{}", headers={"x-big": "a" * 300}))
    assert (problem.code, problem.parameter) == ("header_too_large", "header:x-big")


def test_duplicate_single_valued_header_is_refused() -> None:
    v = validator(**SIMPLE, single_headers=["x-tenant"])
    for name in ("content-type", "x-tenant"):
        problem = refusal(v, ctx(body=b"{}", duplicates=frozenset({name})))
        assert (problem.code, problem.parameter) == ("duplicate_header", f"header:{name}")
    assert v.refusal(ctx(body=b"{}", duplicates=frozenset({"accept"}))) is None


# --- JSON Schema keyword families -------------------------------------------------

ORDER = {
    "type": "object",
    "additionalProperties": False,
    "required": ["id", "qty"],
    "properties": {
        "id": {"type": "string", "pattern": "^[a-z]{3}$", "minLength": 3},
        "qty": {"type": "integer", "minimum": 1, "maximum": 10},
        "price": {"type": "number", "exclusiveMinimum": 0, "multipleOf": 0.01},
        "kind": {"enum": ["a", "b"]},
        "fixed": {"const": 1},
        "email": {"type": "string", "format": "email"},
        "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 2,
                 "uniqueItems": True},
        "note": {"type": ["string", "null"], "maxLength": 5},
        "either": {"oneOf": [{"type": "integer"}, {"type": "string"}]},
        "ref": {"$ref": "#/$defs/positive"},
    },
    "$defs": {"positive": {"type": "integer", "minimum": 1}},
}

VALID = {"id": "abc", "qty": 2, "price": 1.25, "kind": "a", "fixed": 1, "email": "a@b.test",
         "tags": ["x"], "note": None, "either": 3, "ref": 4}


@pytest.mark.parametrize(
    ("patch", "pointer", "detail"),
    [
        ({"qty": "2"}, "/qty", "wrong type (expected integer)"),
        ({"qty": 11}, "/qty", "fails 'maximum'"),
        ({"qty": 0}, "/qty", "fails 'minimum'"),
        ({"price": 0}, "/price", "fails 'exclusiveMinimum'"),
        ({"price": 1.005}, "/price", "fails 'multipleOf'"),
        ({"id": "ABC"}, "/id", "fails 'pattern'"),
        ({"id": "ab"}, "/id", "fails 'minLength'"),
        ({"kind": "c"}, "/kind", "fails 'enum'"),
        ({"fixed": 2}, "/fixed", "fails 'const'"),
        ({"email": "nope"}, "/email", "not a valid 'email'"),
        ({"tags": ["x", "x"]}, "/tags", "fails 'uniqueItems'"),
        ({"tags": ["x", "y", "z"]}, "/tags", "fails 'maxItems'"),
        ({"tags": ["x", 1]}, "/tags/1", "wrong type (expected string)"),
        ({"note": "toolong"}, "/note", "fails 'maxLength'"),
        ({"either": 1.5}, "/either", "fails 'oneOf'"),
        ({"ref": 0}, "/ref", "fails 'minimum'"),
        ({"extra": 1}, "/extra", "property not allowed by the schema"),
    ],
)
def test_keyword_families_fail_with_pointer_and_no_value(
    patch: dict[str, Any], pointer: str, detail: str
) -> None:
    schema = JsonSchema(ORDER)
    schema.check(VALID)
    with pytest.raises(Problem) as info:
        schema.check({**VALID, **patch})
    assert (info.value.detail.pointer, info.value.detail.detail) == (pointer, detail)


def test_missing_required_points_at_the_missing_member() -> None:
    with pytest.raises(Problem) as info:
        JsonSchema(ORDER).check({"id": "abc"})
    assert info.value.detail.pointer == "/qty"
    assert info.value.detail.detail == "missing required property 'qty'"


@pytest.mark.parametrize(
    ("schema", "reason"),
    [
        ({"type": "objectx"}, "invalid schema at /type"),
        ({"pattern": "("}, 'is not a "regex"'),
        ({"$ref": "https://example.com/s.json"}, "is not allowed"),
        ({"$ref": "#/$defs/nope"}, "does not exist"),
        ({"$schema": "http://json-schema.org/draft-07/schema#"}, "draft 2020-12"),
    ],
)
def test_bad_schema_is_a_compile_error(schema: dict[str, Any], reason: str) -> None:
    with pytest.raises(SchemaError) as info:
        JsonSchema(schema)
    assert reason in str(info.value)


# --- OpenAPI ---------------------------------------------------------------------

ORDERS_API = {"openapi": {"file": "orders.openapi.yaml"}}
KEY = {"idempotency-key": "5f0c6e1e-8a6b-4c1e-9d1f-2b3a4c5d6e7f"}
NEW_ORDER = {"customer_id": "c-1", "email": "a@b.test", "currency": "EUR",
             "items": [{"sku": "ABC-0001", "quantity": 1}]}


def order_body(**patch: Any) -> bytes:
    return json.dumps({**NEW_ORDER, **patch}).encode()


def test_openapi_valid_requests_pass() -> None:
    v = validator(**ORDERS_API)
    assert v.refusal(ctx(body=order_body(), headers=KEY)) is None
    assert v.refusal(ctx("GET", "/orders", query="limit=10&status=paid&tag=a&tag=b")) is None
    assert v.refusal(ctx("GET", "/orders/42")) is None
    assert v.refusal(ctx("GET", "/orders/latest")) is None  # literal path wins over {id}
    assert v.refusal(ctx("DELETE", "/orders/7")) is None


@pytest.mark.parametrize(
    ("request_", "status", "code", "where"),
    [
        (ctx("GET", "/customers"), 404, "unknown_operation", None),
        (ctx("PATCH", "/orders/1"), 405, "method_not_allowed", None),
        (ctx("GET", "/orders/0"), 400, "invalid_parameter", "path:id"),
        (ctx("GET", "/orders/abc"), 400, "invalid_parameter", "path:id"),
        (ctx("GET", "/orders", query="limit=1000"), 400, "invalid_parameter", "query:limit"),
        (ctx("GET", "/orders", query="limit=x"), 400, "invalid_parameter", "query:limit"),
        (ctx("GET", "/orders", query="limit=1&limit=2"), 400, "duplicate_parameter",
         "query:limit"),
        (ctx("GET", "/orders", query="status=lost"), 400, "invalid_parameter", "query:status"),
        (ctx("GET", "/orders", query="tag=" + "x" * 17), 400, "invalid_parameter", "query:tag"),
        (ctx(body=order_body()), 400, "missing_parameter", "header:idempotency-key"),
        (ctx(body=order_body(), headers={"idempotency-key": "nope"}), 400, "invalid_parameter",
         "header:idempotency-key"),
        (ctx(headers=KEY), 400, "body_required", None),
        (ctx("GET", "/orders/1", body=b"{}"), 400, "body_not_allowed", None),
    ],
)
def test_openapi_refusals(
    request_: RequestContext, status: int, code: str, where: str | None
) -> None:
    problem = refusal(validator(**ORDERS_API), request_)
    assert (problem.status, problem.code, problem.parameter) == (status, code, where)


def test_openapi_body_refusal_points_into_the_body() -> None:
    v = validator(**ORDERS_API)
    body = order_body(items=[{"sku": "ABC-0001", "quantity": 0}])
    problem = refusal(v, ctx(body=body, headers=KEY))
    assert (problem.code, problem.pointer) == ("schema_violation", "/items/0/quantity")


def test_openapi_path_item_and_request_body_refs() -> None:
    v = validator(**ORDERS_API)
    assert v.refusal(ctx(path="/orders/1/refunds", body=b'{"amount": 5}')) is None
    problem = refusal(v, ctx(path="/orders/1/refunds", body=b'{"amount": -5}'))
    assert (problem.code, problem.pointer) == ("schema_violation", "/amount")


def test_openapi_30_dialect_and_base_path() -> None:
    v = validator(openapi={"file": "orders30.openapi.json"})
    ok = ctx(path="/v1/refunds", body=b'{"amount": 1, "reason": null, "kind": null}')
    assert v.refusal(ok) is None
    wrong = refusal(v, ctx(path="/v1/refunds", body=b'{"amount": 1, "kind": "half"}'))
    assert (wrong.code, wrong.pointer) == ("schema_violation", "/kind")
    zero = refusal(v, ctx(path="/v1/refunds", body=b'{"amount": 0}'))
    assert (zero.code, zero.pointer) == ("schema_violation", "/amount")
    based = validator(openapi={"file": "orders.openapi.yaml", "base_path": "/api/"})
    assert based.refusal(ctx("GET", "/api/orders/3")) is None
    assert refusal(based, ctx("GET", "/orders/3")).status == 404


@pytest.mark.parametrize(
    ("doc", "reason"),
    [
        ({"swagger": "2.0"}, "not an OpenAPI document"),
        ({"openapi": "3.2.0", "paths": {"/a": {}}}, "not supported"),
        ({"openapi": "3.1.0", "paths": {"/a/{id}": {"get": {}}}}, "'id' is not declared"),
        ({"openapi": "3.1.0", "paths": {"/a": {"get": {"parameters": [
            {"name": "s", "in": "cookie"}]}}}}, "cookie parameters"),
        ({"openapi": "3.1.0", "paths": {"/a": {"post": {"requestBody": {"content": {
            "application/json": {"schema": {"$ref": "other.yaml#/X"}}}}}}}}, "other.yaml"),
        ({"openapi": "3.1.0", "paths": {"/a": {"post": {"requestBody": {"content": {
            "application/json": {"schema": {"type": 5}}}}}}}}, "invalid schema"),
    ],
)
def test_bad_openapi_document_is_a_compile_error(
    tmp_path: Path, doc: dict[str, Any], reason: str
) -> None:
    (tmp_path / "api.json").write_text(json.dumps(doc))
    with pytest.raises(SchemaError) as info:
        compile_validation(Validation.model_validate({"openapi": {"file": "api.json"}}), tmp_path)
    assert reason in str(info.value)


# --- Hypothesis: the parser round-trips JSON and refuses garbage cleanly ---------------

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**30), 10**30)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(codec="utf-8", exclude_categories=["Cs"])),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=30,
)


@settings(max_examples=200, deadline=None)
@given(JSON_VALUES)
def test_any_json_within_limits_round_trips(value: Any) -> None:
    limits = JsonLimits(max_depth=64, max_number_chars=40)
    assert parse_json(json.dumps(value, ensure_ascii=False).encode(), limits) == value


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200) | st.text(alphabet='[]{}":,0123456789eE.-+ \\u', max_size=80)
       .map(str.encode))
def test_garbage_is_either_parsed_or_a_problem_never_another_error(body: bytes) -> None:
    try:
        parse_json(body, JsonLimits(max_depth=8, max_number_chars=16))
    except Problem as problem:
        assert problem.detail.status == 400
        assert problem.detail.code in {
            "malformed_json", "duplicate_key", "number_too_large", "nesting_too_deep"
        }


QUERY = st.fixed_dictionaries(
    {},
    optional={
        "limit": st.integers(1, 100).map(str),
        "status": st.sampled_from(["open", "paid", "shipped"]),
        "tag": st.lists(st.text("abcxyz-", min_size=0, max_size=16), max_size=5),
    },
)
BAD_QUERY = {
    "limit": st.one_of(st.integers(max_value=0), st.integers(min_value=101)).map(str)
    | st.sampled_from(["x", "1.5", "", "1e2"]),
    "status": st.text("abcdefgh", min_size=1, max_size=8).filter(
        lambda s: s not in ("open", "paid", "shipped")
    ),
}


def _query(params: dict[str, Any]) -> str:
    return urlencode(params, doseq=True)


@settings(max_examples=150, deadline=None)
@given(QUERY)
def test_generated_valid_queries_pass(params: dict[str, Any]) -> None:
    assert ORDERS_VALIDATOR.refusal(ctx("GET", "/orders", query=_query(params))) is None


@settings(max_examples=150, deadline=None)
@given(QUERY, st.sampled_from(sorted(BAD_QUERY)), st.data())
def test_mutated_query_is_refused_naming_the_parameter(
    params: dict[str, Any], name: str, data: st.DataObject
) -> None:
    bad = {**params, name: data.draw(BAD_QUERY[name])}
    problem = refusal(ORDERS_VALIDATOR, ctx("GET", "/orders", query=_query(bad)))
    assert (problem.code, problem.parameter) == ("invalid_parameter", f"query:{name}")


ORDERS_VALIDATOR = validator(**ORDERS_API)
