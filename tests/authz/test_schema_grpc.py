"""Request validation through real gRPC against the real authz-service process."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from authz_service.cli import check_config
from tests.kits.grpc_kit import AuthzClient, authz_process, check_request
from tests.kits.processes import wait_for

FIXTURES = Path(__file__).parent / "fixtures"
KEY = "tg_test_schema_0123456789"
IDEMPOTENCY = "5f0c6e1e-8a6b-4c1e-9d1f-2b3a4c5d6e7f"
JSON = {"content-type": "application/json"}


def config(schema_route: str = "") -> str:
    digest = hashlib.sha256(KEY.encode()).hexdigest()
    return f"""
identities:
  - name: partners
    api_key:
      keys: [{{id: k1, sha256: {digest}, subject: svc, scopes: ["orders:write"]}}]
routes:
  - name: orders-api
    match: {{path: {{prefix: /orders}}}}
    identities: [partners]
    require: {{scopes: {{all_of: ["orders:write"]}}}}
    validate:
      openapi: {{file: orders.openapi.yaml}}
      max_body_bytes: 4096
  - name: notes
    match: {{methods: [POST], path: {{exact: /notes}}}}
    identities: [partners]
    validate:
      max_depth: 8
      schema:
        type: object
        required: [text]
        properties:
          text: {{type: string, maxLength: 100}}
          meta: {{type: object}}
  - name: admin-notes
    match: {{methods: [POST], path: {{exact: /admin/notes}}}}
    identities: [partners]
    require: {{scopes: {{all_of: [admin]}}}}
    validate: {{schema: {{type: object}}}}
{schema_route}
"""


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthzClient]:
    workdir = tmp_path_factory.mktemp("schema")
    shutil.copy(FIXTURES / "orders.openapi.yaml", workdir)
    path = workdir / "authz.yaml"
    path.write_text(config())
    with authz_process(path, workdir) as (_, authz):
        yield authz


def auth(**extra: str) -> dict[str, str]:
    return {"x-api-key": KEY, **extra}


def new_order(**patch: Any) -> dict[str, Any]:
    order = {"customer_id": "c-1", "email": "a@b.test", "currency": "EUR",
             "items": [{"sku": "ABC-0001", "quantity": 1}]}
    return {**order, **patch}


def post_order(client: AuthzClient, body: bytes, **headers: str) -> Any:
    hdrs = auth(**{"idempotency-key": IDEMPOTENCY, **JSON, **headers})
    return client.check(check_request("POST", "/orders", hdrs, body=body))


@pytest.mark.integration
def test_valid_order_is_allowed(client: AuthzClient) -> None:
    answer = post_order(client, json.dumps(new_order()).encode())
    assert answer.allowed
    assert answer.metadata["route"] == "orders-api"


@pytest.mark.integration
def test_body_as_utf8_string_field_is_validated_too(client: AuthzClient) -> None:
    # Envoy without pack_as_bytes sends the body in `body`, not `raw_body`.
    hdrs = auth(**{"idempotency-key": IDEMPOTENCY, **JSON})
    bad = json.dumps(new_order(currency="XXX")).encode()
    answer = client.check(check_request("POST", "/orders", hdrs, body=bad, raw_body=False))
    assert answer.status == 400


@pytest.mark.integration
def test_schema_violation_is_problem_json_with_pointer(client: AuthzClient) -> None:
    secret = "do-not-echo-this-value-" * 3
    answer = post_order(client, json.dumps(new_order(customer_id=123, note=secret)).encode())
    assert answer.status == 400
    assert answer.header("content-type") == "application/problem+json"
    assert answer.header("www-authenticate") is None
    assert answer.body == {
        "type": "urn:tollgate:problem:schema_violation",
        "title": "Bad Request",
        "status": 400,
        "detail": "wrong type (expected string)",
        "code": "schema_violation",
        "pointer": "/customer_id",
        "request_id": "req-1",
    }
    assert "do-not-echo" not in answer.raw.denied_response.body


@pytest.mark.integration
def test_unauthenticated_caller_never_reaches_validation(client: AuthzClient) -> None:
    request = check_request("POST", "/orders", JSON, body=b"{not json")
    answer = client.check(request)
    assert answer.status == 401
    assert answer.header("content-type") == "application/json"  # the RFC 6750 answer, unchanged
    assert answer.body["error"] == "missing_credentials"


@pytest.mark.integration
def test_authorization_is_decided_before_the_body_is_read(client: AuthzClient) -> None:
    request = check_request("POST", "/admin/notes", auth(**JSON), body=b"[" * 10_000)
    answer = client.check(request)
    assert (answer.status, answer.body["error"]) == (403, "insufficient_scope")


@pytest.mark.parametrize(
    ("method", "path", "headers", "body", "status", "code", "where"),
    [
        ("GET", "/orders/abc", {}, None, 400, "invalid_parameter", "path:id"),
        ("GET", "/orders?limit=500", {}, None, 400, "invalid_parameter", "query:limit"),
        ("GET", "/orders/1/items", {}, None, 404, "unknown_operation", None),
        ("PUT", "/orders/1", {}, None, 405, "method_not_allowed", None),
        ("POST", "/orders", {"idempotency-key": IDEMPOTENCY, "content-type": "text/plain"},
         b"{}", 415, "unsupported_media_type", None),
        ("POST", "/orders", {"idempotency-key": IDEMPOTENCY, **JSON}, b"{" * 5000, 413,
         "body_too_large", None),
        ("POST", "/orders", {"idempotency-key": IDEMPOTENCY, **JSON,
                             "x-envoy-auth-partial-body": "true"}, b'{"customer_id"', 413,
         "body_truncated", None),
        ("POST", "/orders", {**JSON}, json.dumps(new_order()).encode(), 400,
         "missing_parameter", "header:idempotency-key"),
        ("GET", "/orders", {"x-note": "a\x00b"}, None, 400, "bad_header_value", "header:x-note"),
    ],
)
@pytest.mark.integration
def test_openapi_refusals_through_grpc(  # noqa: PLR0917 (parametrized cases)
    client: AuthzClient,
    method: str,
    path: str,
    headers: dict[str, str],
    body: bytes | None,
    status: int,
    code: str,
    where: str | None,
) -> None:
    answer = client.check(check_request(method, path, auth(**headers), body=body))
    assert answer.status == status
    assert answer.body["code"] == code
    assert answer.body.get("parameter") == where
    assert answer.header("content-type") == "application/problem+json"


@pytest.mark.integration
def test_duplicate_content_type_lines_are_refused(client: AuthzClient) -> None:
    raw = [("x-api-key", KEY), ("content-type", "application/json"),
           ("content-type", "text/plain")]
    answer = client.check(check_request("POST", "/notes", raw_headers=raw, body=b'{"text":"a"}'))
    assert (answer.status, answer.body["code"]) == (400, "duplicate_header")


@pytest.mark.parametrize(
    ("body", "code", "pointer"),
    [
        (b"[" * 60_000, "nesting_too_deep", None),
        (b'{"text": "a", "meta": ' + b'{"a": ' * 9 + b"1" + b"}" * 10, "nesting_too_deep",
         None),
        (b'{"text": "a", "meta": {"n": ' + b"7" * 50_000 + b"}}", "number_too_large",
         "/meta/n"),
        (b'{"text": "a", "text": "b"}', "duplicate_key", "/text"),
        (b'{"text": "a",}', "malformed_json", None),
    ],
)
@pytest.mark.integration
def test_bounded_refusals_through_grpc(
    client: AuthzClient, body: bytes, code: str, pointer: str | None
) -> None:
    answer = client.check(check_request("POST", "/notes", auth(**JSON), body=body))
    assert (answer.status, answer.body["code"], answer.body.get("pointer")) == (
        400, code, pointer)
    assert "7777" not in answer.raw.denied_response.body


# --- Hypothesis: generated orders accepted, one mutated field refused at its pointer ----

SKU = st.from_regex(r"\A[A-Z]{3}-[0-9]{4}\Z")
ITEM = st.fixed_dictionaries(
    {"sku": SKU, "quantity": st.integers(1, 1000)},
    optional={"unit_price": st.floats(0.01, 1e6, allow_nan=False)},
)
ORDER = st.fixed_dictionaries(
    {
        "customer_id": st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]),
                               min_size=3, max_size=64),
        "email": st.sampled_from(["a@b.test", "first.last@example.com"]),
        "currency": st.sampled_from(["EUR", "USD", "GBP"]),
        "items": st.lists(ITEM, min_size=1, max_size=5),
    },
    optional={
        "note": st.none() | st.text(max_size=200),
        "gift": st.booleans(),
        "tags": st.lists(st.text(max_size=8), max_size=5, unique=True),
        "channel": st.just("web"),
    },
)
# A value of the wrong type for each field, and what the schema says about it.
WRONG = {
    "customer_id": 5,
    "email": "not-an-email",
    "currency": "XXX",
    "items": [],
    "note": 3,
    "gift": "yes",
    "tags": "t",
    "channel": "api",
}
HYPOTHESIS = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@pytest.mark.integration
@HYPOTHESIS
@given(order=ORDER)
def test_generated_valid_orders_are_allowed(client: AuthzClient, order: dict[str, Any]) -> None:
    assert post_order(client, json.dumps(order).encode()).allowed


@pytest.mark.integration
@HYPOTHESIS
@given(order=ORDER, field=st.sampled_from(sorted(WRONG)), data=st.data())
def test_mutated_orders_are_refused_at_the_mutated_field(
    client: AuthzClient, order: dict[str, Any], field: str, data: st.DataObject
) -> None:
    mutated = {**order, field: WRONG[field]}
    answer = post_order(client, json.dumps(mutated).encode())
    assert answer.status == 400
    assert answer.body["code"] == "schema_violation"
    assert answer.body["pointer"] == f"/{field}"


@pytest.mark.integration
@HYPOTHESIS
@given(order=ORDER, index=st.integers(0, 4), quantity=st.integers(1001, 10**6))
def test_mutated_item_is_refused_at_its_index(
    client: AuthzClient, order: dict[str, Any], index: int, quantity: int
) -> None:
    items = order["items"]
    index %= len(items)
    items = [*items[:index], {**items[index], "quantity": quantity}, *items[index + 1 :]]
    answer = post_order(client, json.dumps({**order, "items": items}).encode())
    assert answer.body["pointer"] == f"/items/{index}/quantity"


# --- config errors name the file and line; reload swaps the schema ----------------------


@pytest.mark.integration
def test_reload_swaps_the_schema_and_a_bad_one_keeps_the_last_good(tmp_path: Path) -> None:
    shutil.copy(FIXTURES / "orders.openapi.yaml", tmp_path)
    path = tmp_path / "authz.yaml"
    path.write_text(config())
    body = json.dumps({"text": "x" * 50}).encode()
    note = check_request("POST", "/notes", auth(**JSON), body=body)
    with authz_process(path, tmp_path) as (_, authz):
        assert authz.check(note).allowed
        path.write_text(config().replace("maxLength: 100", "maxLength: 10"))
        wait_for(lambda: not authz.check(note).allowed, timeout=10, what="reloaded schema")
        assert authz.check(note).body["pointer"] == "/text"
        path.write_text(config().replace("maxLength: 100", "maxLength: -1"))
        wait_for(
            lambda: "config reload rejected" in (tmp_path / "authz.log").read_text(),
            timeout=10,
            what="rejected reload",
        )
        assert authz.check(note).body["detail"] == "fails 'maxLength'"  # last good kept



def test_bad_schema_is_a_located_config_error(tmp_path: Path) -> None:
    shutil.copy(FIXTURES / "orders.openapi.yaml", tmp_path)
    bad = config("""  - name: broken
    match: {path: {exact: /broken}}
    identities: [partners]
    validate:
      schema: {type: object, properties: {a: {minimum: "one"}}}
""")
    (tmp_path / "authz.yaml").write_text(bad)
    lines = bad.splitlines()
    start = lines.index("  - name: broken")
    line = next(i for i in range(start, len(lines)) if lines[i].strip() == "validate:") + 1
    out, err = _Buffer(), _Buffer()
    assert check_config(str(tmp_path / "authz.yaml"), out, err) == 1
    assert err.text.startswith(f"{tmp_path / 'authz.yaml'}:{line}: routes[3].validate: ")
    assert "invalid schema at /properties/a/minimum" in err.text


def test_missing_schema_file_is_a_config_error(tmp_path: Path) -> None:
    text = config().replace("orders.openapi.yaml", "missing.yaml")
    (tmp_path / "authz.yaml").write_text(text)
    err = _Buffer()
    assert check_config(str(tmp_path / "authz.yaml"), _Buffer(), err) == 1
    assert "routes[0].validate: missing.yaml: file not found" in err.text


class _Buffer:
    def __init__(self) -> None:
        self.text = ""

    def write(self, text: str) -> int:
        self.text += text
        return len(text)

    def flush(self) -> None:
        pass
