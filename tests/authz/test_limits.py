"""Rate limits in the Check, the pure parts: descriptor actions, claim paths, and every
config mistake refused with its location (one fixture per invalid case)."""

from __future__ import annotations

import sys
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest

from authz_service.claims import ClaimPathError, parse_claim_path
from authz_service.cli import check_config
from authz_service.limits.actions import ACTIONS, SKIP, LimitInput, safe_value
from authz_service.limits.config import Action
from authz_service.models import ANONYMOUS, Identity, RequestContext
from ratelimit_service.models import Entry

FIXTURES = Path(__file__).parent / "fixtures" / "limits"


def ctx(**kw: Any) -> RequestContext:
    headers = kw.pop("headers", {})
    return RequestContext(kw.pop("method", "GET"), kw.pop("path", "/orders/1"),
                          headers=MappingProxyType(headers), **kw)


ALICE = Identity("jwt", "alice", "idp", issuer="https://idp.test", tenant="acme",
                 plan="gold", claims=MappingProxyType({
                     "realm_access": {"roles": ["ops", "dev"], "level": 3},
                     "org.unit": {"name": "payments"}}))
KEY = Identity("api_key", "svc", "keys", claims=MappingProxyType({"key_id": "k1"}))
PEER = Identity("mtls", "spiffe://td/a", "mesh",
                claims=MappingProxyType({"spiffe_id": "spiffe://td/a"}))
# A token whose issuer put claims of the names an API key and a peer are counted by.
POSING = Identity("jwt", "mallory", "idp", claims=MappingProxyType({
    "key_id": "k1", "spiffe_id": "spiffe://td/a"}))


def entry(action: dict[str, Any], request: RequestContext | None = None,
          identity: Identity | None = None, route: str = "orders") -> Entry | object | None:
    spec = Action.model_validate(action)
    name, value = spec.kind()
    build = ACTIONS[name].compile(value, name)
    return build(LimitInput(request or ctx(), route, identity))


def test_the_registry_covers_every_action_the_config_accepts() -> None:
    assert set(ACTIONS) == set(Action.model_fields)


@pytest.mark.parametrize(("action", "request_", "expected"), [
    ({"generic_key": {"descriptor_value": "api"}}, ctx(), Entry("generic_key", "api")),
    ({"generic_key": {"descriptor_value": "v", "descriptor_key": "k"}}, ctx(), Entry("k", "v")),
    ({"remote_address": {}}, ctx(source_address="10.1.2.3"), Entry("remote_address", "10.1.2.3")),
    ({"remote_address": {}}, ctx(), None),  # Envoy did not say: no descriptor
    ({"masked_remote_address": {"v4_prefix_mask_len": 24}}, ctx(source_address="10.1.2.3"),
     Entry("masked_remote_address", "10.1.2.0/24")),
    ({"masked_remote_address": {"v6_prefix_mask_len": 64}},
     ctx(source_address="2001:db8:1:2:3::9"), Entry("masked_remote_address", "2001:db8:1:2::/64")),
    ({"masked_remote_address": {}}, ctx(source_address="not-an-ip"), None),
    ({"request_headers": {"header_name": "x-user", "descriptor_key": "user"}},
     ctx(headers={"x-user": "bob"}), Entry("user", "bob")),
    ({"request_headers": {"header_name": "x-user", "descriptor_key": "user"}}, ctx(), None),
    ({"request_headers": {"header_name": "x-user", "descriptor_key": "user",
                          "skip_if_absent": True}}, ctx(), SKIP),
    ({"request_headers": {"header_name": ":method", "descriptor_key": "m"}}, ctx(method="PUT"),
     Entry("m", "PUT")),
    ({"request_headers": {"header_name": ":path", "descriptor_key": "p"}},
     ctx(path="/a", query="b=1"), Entry("p", "/a?b=1")),
], ids=lambda v: str(v)[:40] if not isinstance(v, RequestContext) else "ctx")
def test_request_actions(action: dict[str, Any], request_: RequestContext, expected: Any) -> None:
    assert entry(action, request_) == expected


BOTS = {"header_value_match": {"descriptor_value": "bots", "headers": [
    {"name": "user-agent", "string_match": {"safe_regex": ".*bot.*", "ignore_case": True}}]}}


@pytest.mark.parametrize(("action", "headers", "expected"), [
    (BOTS, {"user-agent": "GoogleBot/2"}, Entry("header_match", "bots")),
    (BOTS, {"user-agent": "curl"}, None),
    (BOTS, {}, None),
    ({"header_value_match": {"descriptor_value": "humans", "expect_match": False,
                             "headers": BOTS["header_value_match"]["headers"]}},
     {"user-agent": "curl"}, Entry("header_match", "humans")),
    ({"header_value_match": {"descriptor_value": "keyed", "headers": [
        {"name": "x-api-key", "present_match": True}]}}, {"x-api-key": "k"},
     Entry("header_match", "keyed")),
    ({"header_value_match": {"descriptor_value": "anon", "headers": [
        {"name": "authorization", "present_match": True, "invert_match": True}]}}, {},
     Entry("header_match", "anon")),
    ({"header_value_match": {"descriptor_value": "v1", "headers": [
        {"name": ":path", "string_match": {"prefix": "/v1/"}}]}}, {}, None),
])
def test_header_value_match(action: dict[str, Any], headers: dict[str, str], expected: Any
                            ) -> None:
    assert entry(action, ctx(headers=headers)) == expected


@pytest.mark.parametrize(("action", "identity", "expected"), [
    ({"subject": {}}, ALICE, Entry("subject", "alice")),
    ({"subject": {}}, ANONYMOUS, None),  # an anonymous caller has no subject to count
    ({"subject": {"default_value": "anyone"}}, ANONYMOUS, Entry("subject", "anyone")),
    ({"identity_kind": {}}, KEY, Entry("identity_kind", "api_key")),
    ({"issuer": {"descriptor_key": "iss"}}, ALICE, Entry("iss", "https://idp.test")),
    ({"tenant": {}}, ALICE, Entry("tenant", "acme")),
    ({"plan": {}}, ALICE, Entry("plan", "gold")),
    ({"plan": {}}, KEY, None),
    ({"plan": {"default_value": "free"}}, KEY, Entry("plan", "free")),
    ({"api_key_id": {}}, KEY, Entry("api_key_id", "k1")),
    ({"api_key_id": {}}, ALICE, None),
    ({"principal": {}}, PEER, Entry("principal", "spiffe://td/a")),
    ({"principal": {}}, ALICE, None),
    # Read by kind: a JWT's key_id / spiffe_id claims do not share the key's or the peer's
    # counter (nor take their default away: it applies as for any caller without one).
    ({"api_key_id": {}}, POSING, None),
    ({"principal": {}}, POSING, None),
    ({"api_key_id": {"default_value": "no-key"}}, POSING, Entry("api_key_id", "no-key")),
    ({"route": {}}, ALICE, Entry("route", "orders")),
    ({"claim": {"path": "realm_access.roles[1]", "descriptor_key": "role"}}, ALICE,
     Entry("role", "dev")),
    ({"claim": {"path": "realm_access.level", "descriptor_key": "level"}}, ALICE,
     Entry("level", "3")),
    ({"claim": {"path": '"org.unit".name', "descriptor_key": "unit"}}, ALICE,
     Entry("unit", "payments")),
    ({"claim": {"path": "realm_access.roles", "descriptor_key": "roles"}}, ALICE, None),
    ({"claim": {"path": "missing.claim", "descriptor_key": "c", "default_value": "none"}},
     ALICE, Entry("c", "none")),
])
def test_identity_actions(action: dict[str, Any], identity: Identity, expected: Any) -> None:
    assert entry(action, identity=identity) == expected


def test_values_that_are_not_plain_text_are_still_counted_under_a_digest() -> None:
    header = {"request_headers": {"header_name": "x-user", "descriptor_key": "user"}}
    weird = entry(header, ctx(headers={"x-user": "bob\x01evil"}))
    again = entry(header, ctx(headers={"x-user": "bob\x01evil"}))
    other = entry(header, ctx(headers={"x-user": "bob\x01good"}))
    assert isinstance(weird, Entry) and weird.value.startswith("~sha256:")
    assert weird == again and weird != other  # same value, same counter; never skipped
    assert safe_value("x" * 300).startswith("~sha256:")
    assert safe_value("gold") == "gold"
    assert safe_value(" padded") != " padded"


@pytest.mark.parametrize(("text", "steps"), [
    ("sub", ("sub",)),
    ("realm_access.roles", ("realm_access", "roles")),
    ('resource_access."orders.api".roles', ("resource_access", "orders.api", "roles")),
    ("groups[0]", ("groups", 0)),
    ("a[1][2].b", ("a", 1, 2, "b")),
    ('"with \\"quotes\\""', ('with "quotes"',)),
])
def test_claim_paths_parse(text: str, steps: tuple[str | int, ...]) -> None:
    assert parse_claim_path(text).steps == steps


@pytest.mark.parametrize("text", ["", ".a", "a.", "a..b", "a[x]", "a b", "a[0", '"open'])
def test_bad_claim_paths_are_refused(text: str) -> None:
    with pytest.raises(ClaimPathError):
        parse_claim_path(text)


INVALID = {
    "bad_claim_path": "15: rate_limits.sets[0].descriptors[0].actions[0].claim.path: claim "
                      "path 'realm_access..roles': expected a name at position 14",
    "bad_regex": "17: rate_limits.sets[0].descriptors[0].actions[0].header_value_match."
                 "headers[0].string_match.safe_regex: invalid regex: missing ), unterminated "
                 "subpattern at position 0",
    "duplicate_set": "15: rate_limits.sets[1].name: duplicate limit set name 's'",
    "identity_before_authn": "14: rate_limits.sets[0].descriptors[0].actions[0].subject: "
                             "'subject' needs the caller's identity: use it in an after_authz "
                             "set",
    "missing_rules": "7: rate_limits.rules: cannot load the rules: {dir}/../missing.yaml: "
                     "file not found",
    "no_failure_mode": "10: rate_limits.sets[0].store_failure_mode: missing required key "
                       "'store_failure_mode'",
    "two_actions_in_one": "15: rate_limits.sets[0].descriptors[0].actions[0]: set exactly "
                          "one action (generic_key, remote_address, masked_remote_address, "
                          "request_headers, header_value_match, subject, identity_kind, "
                          "issuer, tenant, plan, api_key_id, principal, route, claim)",
    "unknown_action": "14: rate_limits.sets[0].descriptors[0].actions[0].destination_cluster: "
                      "unknown key 'destination_cluster'",
    "unknown_domain": "8: rate_limits.domain: domain 'nowhere' is not in {dir}/../rules.yaml "
                      "(domains: api)",
    "unknown_route": "12: rate_limits.sets[0].routes[1]: unknown route 'closed'",
}


def test_every_invalid_fixture_has_its_message() -> None:
    assert {p.stem for p in (FIXTURES / "invalid").glob("*.yaml")} == set(INVALID)


@pytest.mark.parametrize("name", sorted(INVALID))
def test_an_invalid_limits_config_is_refused_with_its_location(
    name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = FIXTURES / "invalid" / f"{name}.yaml"
    assert check_config(str(path), sys.stdout, sys.stderr) == 1
    expected = f"{path}:" + INVALID[name].format(dir=path.parent)
    assert capsys.readouterr().err.strip() == expected
