"""The policy language in the pure engine: claim paths, requirement trees, CEL
conditions, address rules, shadow mode and shaped denials (no I/O, no process)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from authz_service.claims import parse_claim_path
from authz_service.config import AuthzConfig
from authz_service.models import Allow, Deny
from authz_service.policy.engine import settle
from tests.kits.engine_kit import Built, allow, bearer, ctx, deny, token
from tollgate.config import LocatedError

KEYCLOAK = {  # a Keycloak access token's authorization claims
    "realm_access": {"roles": ["offline_access", "ops"]},
    "resource_access": {"orders-api": {"roles": ["orders-admin"]},
                        "billing.v2": {"roles": ["payer"]}},
    "azp": "orders-web",
}
AUTH0 = {  # an Auth0 access token: namespaced custom claims and RBAC permissions
    "https://example.com/roles": ["support"],
    "https://example.com/tenant": "acme",
    "permissions": ["read:orders", "write:orders"],
}


def config(routes: list[dict[str, Any]], **jwt: Any) -> dict[str, Any]:
    return {
        "identities": [{"name": "idp", "jwt": {
            "issuer": "https://issuer.test", "audiences": ["orders-api"],
            "jwks_file": "unused.json", **jwt}}],
        "routes": [{"match": {"path": {"prefix": f"/{r['name']}"}}, **r} for r in routes],
    }


def built(routes: list[dict[str, Any]], **extra: Any) -> Built:
    cfg = config(routes, **{k: v for k, v in extra.items() if k.endswith("_claim")
                            or k == "scope_claims"})
    cfg.update({k: v for k, v in extra.items() if not (k.endswith("_claim")
                                                       or k == "scope_claims")})
    return Built(cfg)


def check(b: Built, route: str, claims: dict[str, Any] | None = None, *,
          method: str = "GET", source: str = "", headers: dict[str, str] | None = None,
          query: str = "") -> Allow | Deny:
    request = ctx(f"/{route}", method,
                  {**(bearer(token(**claims)) if claims is not None else {}),
                   **(headers or {})})
    request.source_address = source
    request.query = query
    outcome = b.decide(request)
    assert isinstance(outcome, Allow | Deny)
    return outcome


# 1. Claim paths -------------------------------------------------------------

@pytest.mark.parametrize(("text", "steps"), [
    ('resource_access["orders.api"].roles', ("resource_access", "orders.api", "roles")),
    ('["https://example.com/roles"]', ("https://example.com/roles",)),
    ('a["b"][0]["c.d"]', ("a", "b", 0, "c.d")),
])
def test_bracket_quoted_keys_hold_dots_and_slashes(text: str, steps: tuple[Any, ...]) -> None:
    assert parse_claim_path(text).steps == steps


def test_keycloak_realm_roles_are_read_through_a_path() -> None:
    b = built([{"name": "ops", "require": {"roles": {"any_of": ["ops"]}}}],
              roles_claim="realm_access.roles")
    allow(check(b, "ops", KEYCLOAK))
    assert deny(check(b, "ops", {"realm_access": {"roles": ["viewer"]}})).description == \
        "required role missing"


def test_keycloak_client_roles_and_dotted_client_ids_in_claim_requirements() -> None:
    b = built([
        {"name": "a", "require": {"claims": {"resource_access.orders-api.roles": "orders-admin"}}},
        {"name": "b", "require": {"claims": {'resource_access["billing.v2"].roles': ["payer"]}}},
        {"name": "c", "require": {"claims": {"resource_access.orders-api.roles[0]": "x"}}},
    ])
    allow(check(b, "a", KEYCLOAK))
    allow(check(b, "b", KEYCLOAK))
    assert deny(check(b, "c", KEYCLOAK)).description == \
        "claim 'resource_access.orders-api.roles[0]' not accepted"


def test_auth0_namespaced_roles_tenant_and_permissions() -> None:
    b = built([
        {"name": "support", "require": {"roles": {"all_of": ["support"]}}},
        {"name": "write", "require": {"scopes": {"all_of": ["write:orders"]}}},
    ], roles_claim='["https://example.com/roles"]', tenant_claim='["https://example.com/tenant"]',
        scope_claims=["scope", "permissions"])
    ok = allow(check(b, "support", AUTH0))
    assert ok.identity.tenant == "acme"
    assert "write:orders" in ok.identity.scopes
    allow(check(b, "write", AUTH0))


def test_subject_and_upstream_headers_read_claim_paths() -> None:
    b = built([{"name": "r"}], subject_claim="ext.uid",
              upstream={"claims": {"realm_access.roles[1]": "x-role",
                                   '["https://example.com/tenant"]': "x-tenant"}})
    ok = allow(check(b, "r", {**KEYCLOAK, **AUTH0, "ext": {"uid": "u-7"}}))
    assert ok.identity.subject == "u-7"
    headers = dict(ok.headers)
    assert headers["x-role"] == "ops" and headers["x-tenant"] == "acme"


def test_a_bad_claim_path_is_a_config_error() -> None:
    with pytest.raises(ValidationError, match=r"claim path 'realm_access\.\.roles'"):
        AuthzConfig.model_validate(config([{"name": "r"}], roles_claim="realm_access..roles"))


# 2. Requirement trees --------------------------------------------------------

OR_ROUTE = {"name": "or", "require": {"any_of": [
    {"scopes": {"all_of": ["admin"]}},
    {"roles": {"any_of": ["admin"]}},
]}}
NESTED = {"name": "nested", "require": {"any_of": [
    {"claims": {"tenant": "acme"}, "roles": {"all_of": ["ops"]}},
    {"principals": ["svc-root"]},
]}}


def test_scope_or_role_on_one_route() -> None:
    b = built([OR_ROUTE])
    allow(check(b, "or", {"scope": "admin"}))
    allow(check(b, "or", {"roles": ["admin"]}))
    refused = deny(check(b, "or", {"scope": "orders:read"}))
    # a scope alone would have sufficed: RFC 6750 names it
    assert refused.code == "insufficient_scope"
    assert 'scope="admin"' in (refused.challenge or "")


def test_tenant_and_role_or_principal() -> None:
    b = built([NESTED])
    allow(check(b, "nested", {"tenant": "acme", "roles": ["ops"]}))
    allow(check(b, "nested", {"sub": "svc-root"}))
    refused = deny(check(b, "nested", {"tenant": "acme", "roles": ["viewer"]}))
    assert refused.code == "access_denied"
    assert refused.description == ("none of the alternatives met: required role missing; "
                                   "principal not allowed")
    assert refused.challenge is None


def test_not_excludes_and_says_what() -> None:
    b = built([{"name": "n", "require": {"not": {"claims": {"plan": "suspended"}}}}])
    allow(check(b, "n", {"plan": "gold"}))
    refused = deny(check(b, "n", {"plan": "suspended"}))
    assert refused.description == "excluded by rule: not claim plan in ['suspended']"


def test_all_of_with_a_scope_and_a_role_names_the_scope_first_as_flat_groups_did() -> None:
    b = built([{"name": "a", "require": {"all_of": [
        {"scopes": {"all_of": ["orders:write"]}}, {"roles": {"all_of": ["ops"]}}]}}])
    refused = deny(check(b, "a", {"scope": "orders:read"}))
    assert refused.code == "insufficient_scope" and refused.description == \
        "requires scope: orders:write"


def test_any_of_prefers_the_alternative_that_scopes_alone_would_satisfy() -> None:
    b = built([{"name": "p", "require": {"any_of": [
        {"scopes": {"all_of": ["a"]}, "roles": {"all_of": ["r"]}},  # needs more than a scope
        {"scopes": {"all_of": ["b", "c"]}},
    ]}}])
    refused = deny(check(b, "p", {"scope": "b"}))
    assert refused.code == "insufficient_scope"
    assert 'scope="c"' in (refused.challenge or "")


def test_any_of_where_no_scope_alone_would_do_is_access_denied() -> None:
    b = built([{"name": "p", "require": {"any_of": [
        {"scopes": {"all_of": ["a"]}, "roles": {"all_of": ["r"]}},
        {"principals": ["x"]},
    ]}}])
    refused = deny(check(b, "p", {"scope": "z"}))
    assert refused.code == "access_denied" and refused.challenge is None


def test_flat_configs_answer_as_before() -> None:
    b = built([{"name": "f", "require": {"scopes": {"all_of": ["s1"]}, "roles": {
        "any_of": ["r1"]}, "claims": {"tenant": ["acme"]}, "principals": ["user-1"]}}])
    allow(check(b, "f", {"scope": "s1", "roles": ["r1"], "tenant": "acme"}))
    assert deny(check(b, "f", {"scope": "x", "roles": ["zz"]})).code == "insufficient_scope"
    assert deny(check(b, "f", {"scope": "s1"})).description == "required role missing"
    assert deny(check(b, "f", {"scope": "s1", "roles": ["r1"], "tenant": "b"})).description \
        == "claim 'tenant' not accepted"
    assert deny(check(b, "f", {"scope": "s1", "roles": ["r1"], "tenant": "acme",
                               "sub": "u2"})).description == "principal not allowed"


def test_anonymous_caller_failing_a_tree_is_asked_to_authenticate() -> None:
    b = built([{**OR_ROUTE, "anonymous": True}])
    assert deny(check(b, "or")).code == "missing_credentials"


@pytest.mark.parametrize(("require", "message"), [
    ({"any_of": [{}]}, "an empty requirement group would always pass"),
    ({"not": {}}, "'not' over an empty group would never pass"),
    ({"any_of": [{"scope": "x"}]}, "Extra inputs are not permitted"),
])
def test_meaningless_trees_are_refused(require: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        AuthzConfig.model_validate(config([{"name": "r", "require": require}]))


# 3. CEL conditions -----------------------------------------------------------

def cel_route(expression: str, **more: Any) -> Built:
    return built([{"name": "c", "require": {"cel": expression}, **more}])


@pytest.mark.parametrize(("expression", "kwargs", "passes"), [
    ('request.method == "POST"', {"method": "POST"}, True),
    ('request.method == "POST"', {}, False),
    ('request.path.startsWith("/c")', {}, True),
    ('request.headers["x-tenant"] == identity.claims.tenant',
     {"headers": {"x-tenant": "acme"}, "claims": {"tenant": "acme"}}, True),
    ('request.headers["x-tenant"] == identity.claims.tenant',
     {"headers": {"x-tenant": "evil"}, "claims": {"tenant": "acme"}}, False),
    ('request.headers["x-missing"] == "a"', {}, False),  # runtime error: fails closed
    ('request.query.dry == "1"', {"query": "dry=1&dry=0"}, True),
    ('request.source_address.startsWith("10.")', {"source": "10.0.0.9"}, True),
    ('"orders:read" in identity.scopes', {}, True),
    ('"ops" in identity.roles && identity.subject == "user-1"', {"claims": {"roles": ["ops"]}},
     True),
    ('identity.claims.realm_access.roles.exists(r, r == "ops")', {"claims": KEYCLOAK}, True),
    ('identity.claims.realm_access.roles.exists(r, r == "root")', {"claims": KEYCLOAK}, False),
    ('identity.claims["https://example.com/tenant"] == "acme"', {"claims": AUTH0}, True),
    ("request.host", {}, False),  # not a bool at run time: fails closed
])
def test_cel_conditions_over_request_and_identity(
    expression: str, kwargs: dict[str, Any], passes: bool
) -> None:
    b = cel_route(expression)
    claims = kwargs.pop("claims", {})
    outcome = check(b, "c", claims, **kwargs)
    assert isinstance(outcome, Allow) is passes, outcome
    if not passes:
        assert deny(outcome).description == "condition not met"


def test_cel_in_a_tree_beside_scopes() -> None:
    b = built([{"name": "t", "require": {"any_of": [
        {"cel": 'request.method == "GET"'}, {"scopes": {"all_of": ["orders:write"]}}]}}])
    allow(check(b, "t", {}))
    refused = deny(check(b, "t", {}, method="DELETE"))
    assert refused.code == "insufficient_scope"


@pytest.mark.parametrize(("expression", "reason"), [
    ('reqest.method == "GET"',
     "CEL: undeclared reference to 'reqest.method' (line 1, column 7 of the expression)"),
    ("request.method ==", "CEL: Syntax error: mismatched input '<EOF>'"),
    ("1 + 2", "a CEL condition must be a bool, not int"),
    ('request.methd == "GET"', "CEL: request has no field 'methd' (it has: body, headers, "
                               "host, method, path, query, scheme, source_address)"),
    ("x" * 1100, "CEL condition longer than 1024 characters"),
    ("[1].all(a, [1].all(b, [1].all(c, [1].all(d, true))))",
     "CEL condition uses more than 3 comprehension macros"),
])
def test_bad_cel_is_a_located_config_error(tmp_path: Any, expression: str, reason: str) -> None:
    from authz_service.keys.registry import KeyRegistry
    from authz_service.policy.loading import load_policy
    from tollgate.config import ConfigError

    path = tmp_path / "authz.yaml"
    path.write_text(
        "identities:\n"
        "  - name: idp\n"
        "    api_key: {keys: []}\n"
        "routes:\n"
        "  - name: r\n"
        "    require:\n"
        f"      cel: {json.dumps(expression)}\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_policy(path, KeyRegistry())
    assert str(caught.value).startswith(f"{path}:7: routes[0].require.cel: {reason}")


def test_cel_reading_claims_keeps_them_in_the_token_cache() -> None:
    b = cel_route('identity.claims.dept == "eng"')
    allow(check(b, "c", {"dept": "eng"}))
    source = b.policy.sources["idp"]
    assert "dept" in source.kept_claims  # type: ignore[attr-defined]
    free = cel_route('identity.claims["dept"] == "eng"')
    assert "*" in free.policy.sources["idp"].kept_claims  # type: ignore[attr-defined]


# 4. Address rules ------------------------------------------------------------

def test_route_address_allow_and_deny() -> None:
    b = built([{"name": "a", "address": {"allow": ["10.0.0.0/8", "2001:db8::/32"],
                                          "deny": ["10.9.0.0/16"]}}])
    allow(check(b, "a", {}, source="10.1.2.3"))
    allow(check(b, "a", {}, source="2001:db8::1"))
    allow(check(b, "a", {}, source="::ffff:10.1.2.3"))  # IPv4-mapped
    for source in ("10.9.1.1", "192.0.2.1", "", "not-an-ip"):
        refused = deny(check(b, "a", {}, source=source))
        assert (refused.code, refused.status) == ("address_denied", 403), source


def test_route_address_is_checked_before_identity() -> None:
    b = built([{"name": "a", "address": {"allow": ["10.0.0.0/8"]}}])
    assert deny(check(b, "a", None, source="192.0.2.1")).code == "address_denied"


def test_a_client_header_never_supplies_the_address() -> None:
    b = built([{"name": "a", "address": {"allow": ["10.0.0.0/8"]}}])
    forged = {"x-forwarded-for": "10.0.0.1", "x-real-ip": "10.0.0.1"}
    assert deny(check(b, "a", {}, source="192.0.2.1", headers=forged)).code == "address_denied"


def test_global_address_rule_applies_to_every_request() -> None:
    b = built([{"name": "a"}], address={"deny": ["192.0.2.0/24"]}, unmatched="allow")
    assert deny(check(b, "a", {}, source="192.0.2.7")).code == "address_denied"
    assert deny(check(b, "elsewhere", {}, source="192.0.2.7")).code == "address_denied"
    allow(check(b, "a", {}, source="198.51.100.1"))


def test_address_in_a_tree_internal_network_or_admin_role() -> None:
    b = built([{"name": "t", "require": {"any_of": [
        {"address": {"allow": ["10.0.0.0/8"]}}, {"roles": {"all_of": ["admin"]}}]}}])
    allow(check(b, "t", {}, source="10.0.0.1"))
    allow(check(b, "t", {"roles": ["admin"]}, source="192.0.2.1"))
    assert deny(check(b, "t", {}, source="192.0.2.1")).code == "access_denied"


@pytest.mark.parametrize(("rule", "message"), [
    ({"allow": ["10.0.0.1/8"]}, "'10.0.0.1/8' is not a network: 10.0.0.1/8 has host bits set"),
    ({"allow": ["ten"]}, "'ten' is not a network"),
    ({}, "an address rule needs 'allow' or 'deny' networks"),
])
def test_bad_networks_are_refused(rule: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        AuthzConfig.model_validate(config([{"name": "r", "address": rule}]))


# 5. Shadow mode --------------------------------------------------------------

def test_shadow_route_allows_what_it_would_deny_and_says_what() -> None:
    b = built([{**OR_ROUTE, "shadow": True}])
    request = ctx("/or", "GET", bearer(token(scope="x")))
    decided = b.decide(request)
    assert isinstance(decided, Allow) and decided.identity.subject == "user-1"
    route = b.policy.routes_by_name["or"]
    from authz_service.policy.engine import authenticate, permit
    proven = authenticate(b.policy, route, request, 1_700_000_000.0)
    assert not isinstance(proven, Deny | type(None))
    refusal = permit(b.policy, route, proven, request)  # type: ignore[arg-type]
    assert refusal is not None
    answer, shadowed = settle(b.policy, route, refusal, request, proven)  # type: ignore[arg-type]
    assert isinstance(answer, Allow) and shadowed is refusal
    assert shadowed.code == "insufficient_scope"


def test_shadow_lets_a_missing_credential_through_as_anonymous() -> None:
    b = built([{"name": "s", "shadow": True}])
    decided = allow(check(b, "s"))
    assert decided.identity.kind == "anonymous"
    assert "x-tollgate-subject" in decided.remove_headers  # nothing forged gets through


def test_policy_wide_shadow_covers_unmatched_requests_too() -> None:
    b = built([{"name": "a", "require": {"roles": {"all_of": ["r"]}}}], shadow=True)
    allow(check(b, "a", {}))
    allow(check(b, "nowhere", {}))


def test_shadow_never_lets_a_malformed_request_through() -> None:
    b = built([{"name": "s", "shadow": True}])
    refused = deny(b.decide(ctx("/s/../admin", "GET")))
    assert refused.code == "invalid_request"


# 6. Shaped denials -----------------------------------------------------------

def test_browser_route_redirects_to_login_without_the_query() -> None:
    b = built([{"name": "app", "deny": {
        "codes": ["missing_credentials", "invalid_token"],
        "redirect": "https://login.example.com/start?return_to={path}&why={code}"}}])
    refused = deny(check(b, "app", None, query="access_token=SECRET"))
    assert refused.status == 302 and refused.challenge is None
    location = dict(refused.headers)["location"]
    assert location == "https://login.example.com/start?return_to=/app&why=missing_credentials"
    assert "SECRET" not in location
    # other codes keep the default answer
    b2 = built([{"name": "app", "require": {"roles": {"all_of": ["x"]}}, "deny": {
        "codes": ["missing_credentials"], "redirect": "https://login.example.com/"}}])
    assert deny(check(b2, "app", {})).status == 403


def test_json_body_template_status_and_headers() -> None:
    b = built([{"name": "api", "require": {"roles": {"all_of": ["x"]}}, "deny": {
        "status": 404, "headers": {"x-denied-by": "tollgate {route}"},
        "body": {"message": "not here", "code": "{code}", "detail": ["{description}"],
                 "n": 1}}}])
    refused = deny(check(b, "api", {}))
    assert refused.status == 404
    assert refused.content_type == "application/json"
    assert json.loads(refused.body or b"") == {
        "message": "not here", "code": "access_denied", "detail": ["required role missing"],
        "n": 1}
    assert ("x-denied-by", "tollgate api") in refused.headers


def test_global_shape_applies_to_routes_without_their_own() -> None:
    b = built([{"name": "a"}], deny={"status": 401, "body": {"e": "{code}"}})
    refused = deny(check(b, "a"))
    assert refused.status == 401 and json.loads(refused.body or b"") == {
        "e": "missing_credentials"}
    assert refused.challenge  # a JSON shape keeps the RFC 6750 challenge


@pytest.mark.parametrize(("shape", "message"), [
    ({"body": {"t": "{headers}"}}, "unknown field '{headers}'"),
    ({"body": {"t": "{code.__class__}"}}, "unknown field"),
    ({"redirect": "https://x/?t={query}"}, "unknown field '{query}'"),
    ({"redirect": "https://x/", "status": 404}, "a redirect needs a 3xx redirect status"),
    ({"body": {}, "redirect": "https://x/"}, "set at most one of 'body' or 'redirect'"),
    ({"headers": {"set-cookie": "a=b"}}, "header 'set-cookie' cannot be set"),
    ({"status": 200}, "Input should be greater than or equal to 300"),
])
def test_shapes_cannot_echo_a_credential_or_break_framing(
    shape: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        AuthzConfig.model_validate(config([{"name": "r", "deny": shape}]))


def test_cel_reads_the_validated_body() -> None:
    b = built([{"name": "pay", "require": {"cel": "request.body.amount <= 100"},
                "validate": {"schema": {"type": "object", "required": ["amount"],
                                        "properties": {"amount": {"type": "integer"}}}}}])
    json_type = {"content-type": "application/json"}

    def pay(body: bytes) -> Allow | Deny:
        request = ctx("/pay", "POST", {**bearer(token()), **json_type})
        request.body = body
        outcome = b.decide(request)
        assert isinstance(outcome, Allow | Deny)
        return outcome

    allow(pay(b'{"amount": 20}'))
    assert deny(pay(b'{"amount": 500}')).description == "condition not met"
    # a body that fails validation fails the condition; schema detail is not shown
    assert deny(pay(b'{"amount": "lots"}')).description == \
        "condition not met: the request is not valid"


def test_cel_body_needs_a_validated_route() -> None:
    with pytest.raises(LocatedError, match=r"request\.body is only there on a route that"):
        built([{"name": "x", "require": {"cel": "request.body.a == 1"}}])


def test_address_verdicts_are_remembered_within_a_bound() -> None:
    from authz_service.policy.address import MAX_REMEMBERED, compile_address_rule
    from authz_service.policy.config import AddressRule

    rule = compile_address_rule(AddressRule(allow=["10.0.0.0/8"]))
    for n in range(MAX_REMEMBERED + 10):
        address = f"10.{n // 65536}.{n // 256 % 256}.{n % 256}"
        assert rule.admits(address)
        assert len(rule._seen) <= MAX_REMEMBERED
    assert not rule.admits("192.0.2.1") and not rule.admits("192.0.2.1")  # remembered: same


def test_a_shadow_route_answers_a_malformed_request_as_such_not_as_a_would_deny() -> None:
    """What shadow mode lets through is still validated: an invalid body is answered
    400, whether the caller was refused for credentials or for a requirement."""
    b = built([{"name": "pay", "shadow": True, "require": {"scopes": {"all_of": ["pay"]}},
                "validate": {"schema": {"type": "object", "required": ["amount"],
                                        "properties": {"amount": {"type": "integer"}}}}}])
    json_type = {"content-type": "application/json"}

    def pay(headers: dict[str, str], body: bytes) -> Allow | Deny:
        request = ctx("/pay", "POST", {**headers, **json_type})
        request.body = body
        outcome = b.decide(request)
        assert isinstance(outcome, Allow | Deny)
        return outcome

    for headers in ({}, bearer(token(scope="other"))):  # no credentials; a missing scope
        malformed = deny(pay(headers, b'{"amount": "lots"}'))
        assert (malformed.status, malformed.code) == (400, "schema_violation")
        allow(pay(headers, b'{"amount": 20}'))  # well formed: shadowed through
