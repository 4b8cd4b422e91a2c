"""Cost of request validation: JSON Schema validators compared, and our pipeline.

    .venv/bin/python -m bench.schema_bench [--repeat 5]

Candidates, each compiled once and validating the same parsed body:
jsonschema (pure Python, Draft 2020-12, format checker on), jsonschema-rs (Rust,
Draft 2020-12, formats validated), fastjsonschema (generated Python; draft-07 at
most, so it cannot take 2020-12 schemas: measured for reference only).

Bodies: the typical one (about 1 KB, 20 fields, one nested object and an array),
and the worst cases the default limits allow (64 KiB body, depth 32, 40-char
numbers): a 64 KiB array of orders (every item validated), a 64 KiB array of
small integers (most values per byte), and nesting at the depth limit. Also the
refusals: a nesting bomb, a 100k-digit number, a duplicate key. Figures are the
median microseconds per call over `--repeat` timing runs. Prints Markdown.

With `--grpc SECONDS`, also runs the real authz-service and drives Checks through
gRPC (bench/authz_bench.py's harness): an API-key route without validation vs
the same route validating the typical body and the 64 KiB worst case, reporting
req/s and server CPU µs per Check.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import tempfile
import timeit
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from types import MappingProxyType
from typing import Any

import fastjsonschema
import jsonschema
import jsonschema_rs

from authz_service.config import Validation
from authz_service.models import RequestContext
from authz_service.validation.json_body import JsonLimits, parse_json
from authz_service.validation.problems import Problem
from authz_service.validation.request import compile_validation
from bench.authz_bench import measure
from tests.kits.grpc_kit import check_request

ROOT = Path(__file__).resolve().parent.parent



LIMIT_BYTES = 64 * 1024
LIMITS = JsonLimits()

ITEM = {
    "type": "object",
    "required": ["sku", "quantity"],
    "additionalProperties": False,
    "properties": {
        "sku": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{4}$"},
        "quantity": {"type": "integer", "minimum": 1, "maximum": 1000},
        "unit_price": {"type": "number", "exclusiveMinimum": 0},
    },
}

ORDER_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "additionalProperties": False,
    "required": ["order_id", "customer_id", "email", "currency", "items"],
    "properties": {
        "order_id": {"type": "string", "format": "uuid"},
        "customer_id": {"type": "string", "minLength": 3, "maxLength": 64},
        "email": {"type": "string", "format": "email", "maxLength": 254},
        "currency": {"enum": ["EUR", "USD", "GBP", "JPY"]},
        "total": {"type": "number", "minimum": 0},
        "created_at": {"type": "string", "format": "date-time"},
        "channel": {"const": "web"},
        "priority": {"type": "integer", "minimum": 0, "maximum": 9},
        "gift": {"type": "boolean"},
        "note": {"type": ["string", "null"], "maxLength": 500},
        "coupon": {"type": "string", "pattern": "^[A-Z0-9]{4,12}$"},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 32},
                 "maxItems": 10, "uniqueItems": True},
        "shipping": {
            "type": "object",
            "required": ["street", "city", "country"],
            "additionalProperties": False,
            "properties": {
                "street": {"type": "string", "maxLength": 200},
                "city": {"type": "string", "maxLength": 100},
                "postcode": {"type": "string", "pattern": "^[A-Z0-9 -]{3,10}$"},
                "country": {"type": "string", "minLength": 2, "maxLength": 2},
            },
        },
        "items": {"type": "array", "minItems": 1, "maxItems": 2000, "items": ITEM},
        "payment_method": {"enum": ["card", "invoice", "paypal"]},
        "locale": {"type": "string", "pattern": "^[a-z]{2}(-[A-Z]{2})?$"},
        "referrer": {"type": "string", "format": "uri"},
        "loyalty_points": {"type": "integer", "minimum": 0},
        "express": {"type": "boolean"},
        "ip": {"type": "string", "format": "ipv4"},
    },
}

FIELDS = {
    "order_id": "5f0c6e1e-8a6b-4c1e-9d1f-2b3a4c5d6e7f",
    "customer_id": "cust-000123",
    "email": "alice@example.com",
    "currency": "EUR",
    "total": 129.95,
    "created_at": "2026-11-23T08:30:00Z",
    "channel": "web",
    "priority": 3,
    "gift": False,
    "note": "Leave the parcel with the neighbour at number 12 if nobody answers the door. "
            "If the neighbour is away too, the parcel can go in the shed behind the house, "
            "which is unlocked during the day; please do not leave it on the doorstep.",
    "coupon": "WINTER2026",
    "tags": ["gift", "express", "fragile"],
    "shipping": {"street": "12 Long Street", "city": "Bristol", "postcode": "BS1 4DJ",
                 "country": "GB"},
    "items": [{"sku": "ABC-0001", "quantity": 2, "unit_price": 19.99},
              {"sku": "XYZ-0042", "quantity": 1, "unit_price": 89.97},
              {"sku": "KLM-0777", "quantity": 3, "unit_price": 0.99}],
    "payment_method": "card",
    "locale": "en-GB",
    "referrer": "https://shop.example.com/cart?step=3",
    "loyalty_points": 1250,
    "express": True,
    "ip": "203.0.113.7",
}


def typical_body() -> bytes:
    return json.dumps(FIELDS).encode()


def orders_body() -> bytes:
    """The typical order with as many items as fit in the body limit."""
    item = {"sku": "ABC-0001", "quantity": 2, "unit_price": 19.99}
    per_item = len(json.dumps(item)) + 2
    count = (LIMIT_BYTES - len(typical_body())) // per_item
    body = json.dumps({**FIELDS, "items": [item] * count}).encode()
    return body[:LIMIT_BYTES] if len(body) <= LIMIT_BYTES else orders_body_fit(item, count)


def orders_body_fit(item: dict[str, Any], count: int) -> bytes:
    while True:
        body = json.dumps({**FIELDS, "items": [item] * count}).encode()
        if len(body) <= LIMIT_BYTES:
            return body
        count -= 1


INT_ARRAY_SCHEMA = {"type": "array", "items": {"type": "integer", "minimum": 0}}
DEEP_SCHEMA: dict[str, Any] = {"type": "array"}


def int_array_body() -> bytes:
    return b"[" + b",".join([b"1"] * ((LIMIT_BYTES - 2) // 2)) + b"]"


def deep_body() -> bytes:
    depth = LIMITS.max_depth
    return b"[" * depth + b"1" + b"]" * depth


def time_us(fn: Callable[[], object], repeat: int) -> float:
    timer = timeit.Timer(fn)
    number, _ = timer.autorange()
    runs = [t / number * 1e6 for t in timer.repeat(repeat, number)]
    return statistics.median(runs)


def refused(body: bytes) -> Callable[[], object]:
    def call() -> object:
        try:
            parse_json(body, LIMITS)
        except Problem as exc:
            return exc.detail.code
        raise AssertionError("not refused")

    return call


def main() -> None:
    args = argparse.ArgumentParser()
    args.add_argument("--repeat", type=int, default=5)
    args.add_argument("--grpc", type=float, default=0, metavar="SECONDS",
                      help="also measure Checks through the real service, SECONDS per case")
    parsed = args.parse_args()
    repeat = parsed.repeat

    cases = [
        ("typical 1 KB, 20 fields", typical_body(), ORDER_SCHEMA),
        ("worst: 64 KiB of order items", orders_body(), ORDER_SCHEMA),
        ("worst: 64 KiB array of integers", int_array_body(), INT_ARRAY_SCHEMA),
        (f"worst: nesting at depth {LIMITS.max_depth}", deep_body(), DEEP_SCHEMA),
    ]
    print(f"Python {sys.version.split()[0]}; jsonschema {jsonschema_version('jsonschema')}, "
          f"jsonschema-rs {jsonschema_version('jsonschema-rs')}, "
          f"fastjsonschema {fastjsonschema.VERSION}; median µs per call\n")
    print("| body | bytes | json.loads | parse_json (ours) | jsonschema | jsonschema-rs "
          "| fastjsonschema (draft-07) |")
    print("|---|---|---|---|---|---|---|")
    for name, body, schema in cases:
        data = parse_json(body, LIMITS)
        py = jsonschema.Draft202012Validator(
            schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
        )
        rs = jsonschema_rs.validator_for(schema, validate_formats=True)
        draft7 = {k: v for k, v in schema.items() if k != "$schema"}
        fast = fastjsonschema.compile(draft7)
        assert py.is_valid(data) and rs.is_valid(data), name
        fast(data)
        row = [
            time_us(lambda b=body: json.loads(b), repeat),
            time_us(lambda b=body: parse_json(b, LIMITS), repeat),
            time_us(lambda d=data, v=py: v.is_valid(d), repeat),
            time_us(lambda d=data, v=rs: v.is_valid(d), repeat),
            time_us(lambda d=data, v=fast: v(d), repeat),
        ]
        print(f"| {name} | {len(body)} | " + " | ".join(f"{x:,.1f}" for x in row) + " |")

    print("\nPer request, the whole validation step (`RequestValidator.refusal`: header "
          "sanity, framing, parse, schema), median µs per call\n")
    print("| body | bytes | outcome | µs |")
    print("|---|---|---|---|")
    headers = {
        "content-type": "application/json",
        "x-api-key": "k" * 32,
        "user-agent": "bench/1.0",
        "accept": "application/json",
        "x-request-id": "5f0c6e1e-8a6b-4c1e-9d1f-2b3a4c5d6e7f",
    }
    for name, body, schema in [*cases, ("refused: 64 KiB nesting bomb", b"[" * LIMIT_BYTES,
                                        DEEP_SCHEMA)]:
        validator = compile_validation(Validation.model_validate({"schema": schema}), ROOT)
        ctx = RequestContext("POST", "/orders", headers=MappingProxyType(headers), body=body)
        problem = validator.refusal(ctx)
        outcome = "allowed" if problem is None else problem.code
        us = time_us(lambda v=validator, c=ctx: v.refusal(c), repeat)
        print(f"| {name} | {len(body)} | {outcome} | {us:,.1f} |")

    print("\nRefusals (parse_json, before any schema): median µs per call\n")
    print("| body | bytes | code | µs |")
    print("|---|---|---|---|")
    bombs = [
        ("nesting bomb", b"[" * LIMIT_BYTES),
        ("nesting bomb, objects", b'{"a":' * (LIMIT_BYTES // 5)),
        ("33 levels (one over)", b"[" * 33 + b"]" * 33),
        ("100k-digit integer (over the body limit too)", b"1" * 100_000),
        ("64 KiB-digit integer", b"9" * LIMIT_BYTES),
        ("duplicate key", b'{"a":1,"b":2,"a":3}'),
    ]
    for name, body in bombs:
        fn = refused(body)
        code = fn()
        print(f"| {name} | {len(body)} | {code} | {time_us(fn, repeat):,.1f} |")
    if parsed.grpc:
        grpc_rows(parsed.grpc)


GRPC_CONFIG = """
identities:
  - name: partners
    api_key:
      keys: [{id: bench, sha256: %(digest)s, subject: svc}]
routes:
  - name: plain
    match: {path: {exact: /plain}}
  - name: validated
    match: {path: {exact: /orders}}
    validate:
      schema: order.json
"""


def grpc_rows(seconds: float) -> None:
    work = Path(tempfile.mkdtemp(prefix="tollgate-schema-bench-"))
    key = "bench-key-0123456789abcdef"
    (work / "order.json").write_text(json.dumps(ORDER_SCHEMA))
    config = work / "authz.yaml"
    config.write_text(GRPC_CONFIG % {"digest": hashlib.sha256(key.encode()).hexdigest()})
    headers = {"x-api-key": key, "content-type": "application/json"}

    def requests(path: str, body: bytes) -> list[bytes]:
        return [check_request("POST", path, headers, body=body).SerializeToString()]

    address = f"unix:{work}/bench.sock"
    argv = [str(Path(sys.executable).parent / "authz-service"), "--http-address", "off", "--config", str(config),
            "--grpc-address", address, "--log-level", "error"]
    opts = argparse.Namespace(seconds=seconds, concurrency=16)
    cases = [
        ("API key, no validation, 1 KB body", "/plain", typical_body()),
        ("API key + schema, typical 1 KB body", "/orders", typical_body()),
        ("API key, no validation, 64 KiB body", "/plain", orders_body()),
        ("API key + schema, 64 KiB of order items", "/orders", orders_body()),
    ]
    print(f"\nThrough gRPC (authz-service, unix socket, concurrency 16, {seconds:.0f} s/case)\n")
    print("| case | req/s | server CPU µs/Check | allowed |")
    print("|---|---:|---:|---:|")
    for name, path, body in cases:
        row = measure(name, argv, address, requests(path, body), opts)
        print(f"| {name} | {float(row['rps']):.0f} | {float(row['cpu_us']):.0f} "
              f"| {float(row['allowed']):.0%} |")


def jsonschema_version(name: str) -> str:
    return version(name)


if __name__ == "__main__":
    main()
