"""The contract between Envoy and authz-service (protos/tollgate/v1/), held against the
code and every shipped Envoy config: metadata keys, context-extension keys, the HTTP
door's attribute headers and their allow-list, and the denial bodies.

"Every shipped HTTP-layout config" is each Envoy bootstrap of envoy/, Compose, the
Kubernetes overlays and the Helm chart (as kustomize and Helm render them) whose
ext_authz filter uses `http_service` (tests/deploy/_util.shipped_envoy_configs)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import MappingProxyType
from typing import Any

import jsonschema_rs
import pytest
import yaml

from authz_service.config import AuthzConfig, UpstreamHeaders
from authz_service.contract import (
    ATTRIBUTE_HEADERS,
    ATTRIBUTE_PREFIX,
    ATTRIBUTES,
    METADATA_KEYS,
    ROUTE_EXTENSION,
    SCOPES_EXTENSION,
)
from authz_service.doors.bodies import denial_body, denial_headers
from authz_service.doors.http import DEFAULT_PATH_PREFIX
from authz_service.limits.stage import HEADER_NAMES
from authz_service.models import Identity, RequestContext
from authz_service.policy import denials
from authz_service.policy.compiled import compile_config
from authz_service.policy.engine import finish
from authz_service.validation.problems import ProblemDetail
from tests.kits.deploy_kit import ext_authz_filters, is_http_layout, shipped_envoy_configs
from tollgate_cli.stack import ENVOY_DIR, render

# The shipped configs are rendered as users apply them: kubectl kustomize, Helm's engine.
pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PROTOS = ROOT / "protos" / "tollgate" / "v1"


def proto_fields(message: str) -> list[str]:
    text = (PROTOS / "contract.proto").read_text()
    body = re.search(rf"message {message} \{{(.*?)\n\}}", text, re.S)
    assert body is not None, message
    return re.findall(r"^\s*string (\w+) = \d+;", body.group(1), re.M)


def envoy_config(name: str) -> dict[str, Any]:
    values = {"RUN_DIR": "/run", "HTTPS_PORT": 1, "MTLS_PORT": 2, "ADMIN_PORT": 3,
              "UPSTREAM_PORT": 4}
    loaded: dict[str, Any] = yaml.safe_load(render(ENVOY_DIR / name, values))
    return loaded


def ext_authz(config: dict[str, Any]) -> dict[str, Any]:
    filters = ext_authz_filters(config)
    if not filters:
        raise AssertionError("no ext_authz filter")
    found: dict[str, Any] = filters[0]["typed_config"]
    return found


def matches(pattern: dict[str, Any], name: str) -> bool:
    """Envoy's StringMatcher on a header name (names are lower-case already)."""
    if "exact" in pattern:
        return bool(name == pattern["exact"].lower())
    if "prefix" in pattern:
        return name.startswith(pattern["prefix"].lower())
    if "suffix" in pattern:
        return name.endswith(pattern["suffix"].lower())
    if "contains" in pattern:
        return pattern["contains"].lower() in name
    if "safe_regex" in pattern:
        return re.fullmatch(pattern["safe_regex"]["regex"], name) is not None
    raise AssertionError(f"unknown matcher {pattern}")


HTTP = ext_authz(envoy_config("envoy.yaml"))
SHIPPED = {name: yaml.safe_load(text) for name, text in shipped_envoy_configs().items()}
# Every shipped HTTP-layout config's ext_authz filter, by where it comes from.
HTTP_LAYOUTS = {name: ext_authz(config) for name, config in SHIPPED.items()
                if is_http_layout(config)}
each_http_layout = pytest.mark.parametrize("http", list(HTTP_LAYOUTS.values()),
                                           ids=list(HTTP_LAYOUTS))


def test_the_http_layout_configs_are_every_shipped_one() -> None:
    assert HTTP_LAYOUTS["envoy/envoy.yaml"] == HTTP
    assert {"compose/envoy.yaml", "envoy/envoy.yaml"} <= set(HTTP_LAYOUTS)
    for where in ("k8s/single-replica", "k8s/shared-limits", "chart/default",
                  "chart/shared-limits"):
        assert any(name.startswith(where + ":tollgate-envoy") for name in HTTP_LAYOUTS), where
    # Each shipped config is one layout or the other, never neither (an untested third).
    for name, config in SHIPPED.items():
        filters = ext_authz_filters(config)
        assert is_http_layout(config) or not filters or \
            all("grpc_service" in f["typed_config"] for f in filters), name


def test_the_metadata_keys_are_the_contracts_and_the_engines() -> None:
    assert tuple(proto_fields("AuthzMetadata")) == METADATA_KEYS
    config = AuthzConfig.model_validate({"routes": [{"name": "r", "anonymous": True}]})
    policy = compile_config(config, lambda name, source: None)  # type: ignore[arg-type,return-value]
    full = Identity("jwt", "alice", "idp", frozenset({"a"}), issuer="https://i",
                    tenant="t", plan="p", claims=MappingProxyType({}))
    allow = finish(policy, policy.routes[0], full, RequestContext("GET", "/"))
    assert tuple(allow.metadata) == METADATA_KEYS  # type: ignore[union-attr]


@each_http_layout
def test_the_http_layout_turns_exactly_the_metadata_headers_into_metadata(
        http: dict[str, Any]) -> None:
    patterns = http["http_service"]["authorization_response"]["dynamic_metadata_from_headers"]
    assert [p["exact"] for p in patterns["patterns"]] == list(METADATA_KEYS)


def test_the_grpc_layouts_ratelimit_actions_read_only_contract_metadata() -> None:
    text = (ENVOY_DIR / "envoy-grpc.yaml").read_text()
    keys = re.findall(r"path: \[\{key: (\w+)\}\]", text)
    assert keys and set(keys) <= set(METADATA_KEYS)


def test_context_extension_keys() -> None:
    assert proto_fields("ContextExtensions") == [ROUTE_EXTENSION, SCOPES_EXTENSION]


@each_http_layout
def test_the_attribute_headers_are_the_contracts_and_envoy_sets_each_one(
        http: dict[str, Any]) -> None:
    from_proto = {ATTRIBUTE_PREFIX + f.replace("_", "-") for f in proto_fields("HttpAttributes")}
    assert from_proto == set(ATTRIBUTE_HEADERS.values())
    added = {h["key"]: h["value"]
             for h in http["http_service"]["authorization_request"]["headers_to_add"]}
    assert added == {ATTRIBUTE_PREFIX + header: value for header, value in ATTRIBUTES.values()}


@each_http_layout
def test_no_allowed_header_pattern_lets_a_client_send_an_attribute_header(
        http: dict[str, Any]) -> None:
    patterns = http["allowed_headers"]["patterns"]
    for header in ATTRIBUTE_HEADERS.values():
        assert not any(matches(p, header) for p in patterns), header
    assert "allowed_headers" not in http["http_service"]["authorization_request"]


@each_http_layout
def test_the_path_prefix_is_the_doors_default(http: dict[str, Any]) -> None:
    assert http["http_service"]["path_prefix"] == DEFAULT_PATH_PREFIX


def every_denial() -> list[Any]:
    problem = ProblemDetail(400, "schema_violation", "does not match", pointer="/a")
    return [
        denials.missing_credentials("r"), denials.invalid_token("r", "token expired"),
        denials.invalid_request("r", "empty credential"),
        denials.insufficient_scope("r", "orders:write"), denials.access_denied("no"),
        denials.no_route(), denials.internal_error(), denials.malformed(problem),
        denials.rate_limited(3, (("x-ratelimit-limit", "5"), ("x-ratelimit-remaining", "0"),
                                 ("x-ratelimit-reset", "3"))),
        denials.rate_limited(3, (("RateLimit-Policy", '"a";q=1;w=1'),
                                 ("RateLimit", '"a";r=0;t=1'))),
        denials.limits_unavailable(),
    ]


@pytest.mark.parametrize("deny", every_denial(), ids=lambda d: d.code)
def test_every_denial_body_is_the_schemas(deny: Any) -> None:
    schema = json.loads((PROTOS / "denial.schema.json").read_text())
    body = json.loads(denial_body(deny, "3f1c-req"))
    jsonschema_rs.validate(schema, body)


@each_http_layout
@pytest.mark.parametrize("deny", every_denial(), ids=lambda d: d.code)
def test_the_http_layout_passes_every_denial_header_to_the_client(
        deny: Any, http: dict[str, Any]) -> None:
    patterns = http["http_service"]["authorization_response"]["allowed_client_headers"]
    for name, _ in denial_headers(deny):
        assert any(matches(p, name.lower()) for p in patterns["patterns"]), name


@each_http_layout
def test_the_http_layout_passes_the_rate_limit_headers_on_an_allow(http: dict[str, Any]) -> None:
    patterns = http["http_service"]["authorization_response"][
        "allowed_client_headers_on_success"]["patterns"]
    for name in (*HEADER_NAMES, "ratelimit-policy", "ratelimit"):
        assert any(matches(p, name) for p in patterns), name


@each_http_layout
def test_identity_headers_go_upstream_and_metadata_headers_do_not(http: dict[str, Any]) -> None:
    patterns = http["http_service"]["authorization_response"]["allowed_upstream_headers"][
        "patterns"]
    upstream = UpstreamHeaders()
    for header in (upstream.subject, upstream.identity, upstream.scopes, upstream.tenant,
                   upstream.plan):
        assert header is not None and any(matches(p, header) for p in patterns), header
    for key in METADATA_KEYS:
        assert not any(matches(p, key) for p in patterns), key


@each_http_layout
def test_the_http_layout_sends_authz_the_request_id(http: dict[str, Any]) -> None:
    assert any(matches(p, "x-request-id") for p in http["allowed_headers"]["patterns"])


def authorizing_connection_managers(config: dict[str, Any]) -> list[dict[str, Any]]:
    """The HTTP connection managers of a config whose filters include ext_authz."""
    found = []
    for listener in config["static_resources"].get("listeners", []):
        for chain in listener["filter_chains"]:
            for network in chain["filters"]:
                hcm = network["typed_config"]
                if any(f["name"] == "envoy.filters.http.ext_authz"
                       for f in hcm.get("http_filters", [])):
                    found.append(hcm)
    return found


AUTHORIZING = {name: config for name, config in SHIPPED.items()
               if authorizing_connection_managers(config)}


def test_every_config_that_authorizes_is_checked_for_its_access_log() -> None:
    assert {name.split(":")[0].split("/")[0] for name in AUTHORIZING} >= {
        "envoy", "compose"} and len(AUTHORIZING) >= 8


@pytest.mark.parametrize("config", list(AUTHORIZING.values()), ids=list(AUTHORIZING))
def test_every_shipped_access_log_carries_the_request_id_authz_logs_and_no_query(
        config: dict[str, Any]) -> None:
    for hcm in authorizing_connection_managers(config):
        logs = hcm.get("access_log", [])
        assert logs, "no access_log"
        for access_log in logs:
            fields = access_log["typed_config"]["log_format"]["json_format"]
            assert fields["request_id"] == "%REQ(X-REQUEST-ID)%"
            assert fields["trace_id"] == "%TRACE_ID%"
            # The query can carry a credential: the path is logged without it.
            assert fields["path"] == "%PATH(NQ)%"
            assert not any("AUTHORIZATION" in v.upper() or "COOKIE" in v.upper()
                           for v in fields.values()), fields
