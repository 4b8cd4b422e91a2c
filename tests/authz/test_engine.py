"""The pure decision pipeline with an injected clock: no I/O, no process."""

from __future__ import annotations

import json

import pytest

from authz_service.keys.keyset import parse_jwks
from authz_service.policy.engine import NeedKeys
from tests.kits import jwt_kit
from tests.kits.engine_kit import (
    ADMIN,
    API_KEY,
    NOW,
    OTHER,
    RSA,
    SKEW,
    Built,
    allow,
    base_config,
    bearer,
    ctx,
    deny,
    token,
)


@pytest.fixture
def built() -> Built:
    return Built()


# --- skew edges -----------------------------------------------------------------


def test_exp_plus_skew_is_expired_exactly(built: Built) -> None:
    tok = token(exp=NOW)
    assert deny(built.decide(ctx(headers=bearer(tok)), NOW + SKEW)).description == "token expired"


def test_just_before_exp_plus_skew_is_valid() -> None:
    tok = token(exp=NOW)
    assert allow(Built().decide(ctx(headers=bearer(tok)), NOW + SKEW - 0.001))


def test_nbf_minus_skew_is_valid_exactly() -> None:
    tok = token(nbf=NOW + SKEW, iat=NOW)
    assert allow(Built().decide(ctx(headers=bearer(tok)), NOW))


def test_just_before_nbf_minus_skew_is_not_yet_valid() -> None:
    tok = token(nbf=NOW + SKEW, iat=NOW)
    outcome = deny(Built().decide(ctx(headers=bearer(tok)), NOW - 0.001))
    assert outcome.description == "token not yet valid"


# --- token cache ------------------------------------------------------------------


def test_repeat_decision_is_served_from_the_cache(built: Built) -> None:
    request = ctx(headers=bearer(token()))
    assert allow(built.decide(request))
    reads = built.providers["idp"].reads
    hits = built.policy.caches.tokens.hits
    for _ in range(5):
        assert allow(built.decide(request, NOW + 1))
    assert built.providers["idp"].reads == reads  # no signature check: keys never read
    assert built.policy.caches.tokens.hits == hits + 5


def test_cached_identity_never_outlives_exp(built: Built) -> None:
    request = ctx(headers=bearer(token(exp=NOW + 100)))
    assert allow(built.decide(request))
    assert allow(built.decide(request, NOW + 100 + SKEW - 0.001))
    outcome = deny(built.decide(request, NOW + 100 + SKEW))
    assert outcome.description == "token expired"


def test_key_generation_bump_invalidates_the_cache(built: Built) -> None:
    request = ctx(headers=bearer(token()))
    assert allow(built.decide(request))
    # The issuer rotated to a key set without rsa-1: the cached identity must go.
    built.providers["idp"].replace(parse_jwks(json.dumps(jwt_kit.jwks(OTHER))))
    outcome = built.decide(request, may_refetch=False)
    assert deny(outcome).description == "unknown key id"


def test_cache_is_per_source() -> None:
    built = Built()
    request = ctx("/any/x", headers=bearer(token()))
    assert allow(built.decide(request)).identity.source == "idp"
    assert len(built.policy.caches.tokens) == 1


def test_cache_disabled_still_decides() -> None:
    built = Built(base_config(token_cache={"max_entries": 0}))
    request = ctx(headers=bearer(token()))
    assert allow(built.decide(request))
    assert allow(built.decide(request))
    assert len(built.policy.caches.tokens) == 0


# --- unknown kid ------------------------------------------------------------------


def test_unknown_kid_asks_for_keys(built: Built) -> None:
    tok = token(jwt_kit.rsa_key("rotated-1"))
    outcome = built.decide(ctx(headers=bearer(tok)))
    assert isinstance(outcome, NeedKeys)
    assert (outcome.source, outcome.kid) == ("idp", "rotated-1")
    assert outcome.fallback.status == 401
    assert outcome.fallback.description == "unknown key id"


def test_an_expired_token_is_refused_before_its_signature_or_keys_are_looked_at(
    built: Built,
) -> None:
    # An unknown kid would ask for a refetch, a forged signature fail the verify: the
    # expiry is answered first, for the cost of a comparison.
    expired = token(jwt_kit.rsa_key("rotated-1"), exp=NOW - 3600, iat=NOW - 7200,
                    nbf=NOW - 7200)
    outcome = deny(built.decide(ctx(headers=bearer(expired))))
    assert (outcome.status, outcome.description) == (401, "token expired")
    head, payload, _ = token(exp=NOW - 3600, iat=NOW - 7200, nbf=NOW - 7200).split(".")
    forged = f"{head}.{payload}.AAAA"
    assert deny(built.decide(ctx(headers=bearer(forged)))).description == "token expired"
    # A live token with a forged signature is still refused by the signature.
    head, payload, _ = token().split(".")
    assert deny(built.decide(ctx(headers=bearer(f"{head}.{payload}.AAAA")))).status == 401


def test_unknown_kid_without_refetch_is_the_fallback(built: Built) -> None:
    tok = token(jwt_kit.rsa_key("rotated-1"))
    outcome = deny(built.decide(ctx(headers=bearer(tok)), may_refetch=False))
    assert (outcome.status, outcome.code, outcome.description) == (
        401,
        "invalid_token",
        "unknown key id",
    )


def test_an_issuer_without_keys_is_keys_unavailable_not_the_clients_fault(
    built: Built,
) -> None:
    built.providers["idp"].replace(parse_jwks('{"keys": []}'))
    outcome = built.decide(ctx(headers=bearer(token())))
    assert isinstance(outcome, NeedKeys)  # a refetch may still bring them
    assert (outcome.fallback.status, outcome.fallback.code, outcome.fallback.challenge) == (
        503, "keys_unavailable", None)
    final = deny(built.decide(ctx(headers=bearer(token())), may_refetch=False))
    assert (final.status, final.code, final.description) == (
        503, "keys_unavailable", "the token issuer's signing keys are unavailable")


def test_refetched_key_is_used_on_the_second_decision(built: Built) -> None:
    rotated = jwt_kit.rsa_key("rotated-1")
    request = ctx(headers=bearer(token(rotated)))
    assert isinstance(built.decide(request), NeedKeys)
    built.providers["idp"].replace(parse_jwks(json.dumps(jwt_kit.jwks(RSA, rotated))))
    assert allow(built.decide(request, may_refetch=False))


def test_malformed_request_never_asks_for_keys(built: Built) -> None:
    tok = token(jwt_kit.rsa_key("rotated-1"))
    request = ctx(headers=bearer(tok, **{"x-api-key": ""}))
    outcome = deny(built.decide(request))
    assert (outcome.status, outcome.description) == (400, "empty credential")


# --- identity order and error ranking ---------------------------------------------


def test_first_success_wins(built: Built) -> None:
    request = ctx(headers=bearer(token(), **{"x-api-key": API_KEY}), principal=ADMIN)
    assert allow(built.decide(request)).identity.kind == "jwt"


def test_later_source_succeeds_after_an_earlier_failure(built: Built) -> None:
    request = ctx(headers=bearer("garbage", **{"x-api-key": API_KEY}))
    assert allow(built.decide(request)).identity.kind == "api_key"


def test_malformed_outranks_peer_and_token_errors(built: Built) -> None:
    request = ctx(
        headers=bearer("x.y.z", **{"x-api-key": ""}),
        principal="spiffe://tollgate.test/ns/x/sa/intruder",
    )
    outcome = deny(built.decide(request))
    assert (outcome.status, outcome.code) == (400, "invalid_request")


def test_refused_peer_outranks_token_error(built: Built) -> None:
    request = ctx(
        headers=bearer("x.y.z", **{"x-api-key": "wrong"}),
        principal="spiffe://tollgate.test/ns/x/sa/intruder",
    )
    outcome = deny(built.decide(request))
    assert (outcome.status, outcome.code) == (403, "peer_not_allowed")


def test_token_error_outranks_foreign_issuer(built: Built) -> None:
    request = ctx(headers=bearer(token(iss="https://other.test"), **{"x-api-key": "wrong"}))
    outcome = deny(built.decide(request))
    assert outcome.description == "unknown API key"


def test_foreign_issuer_alone_is_issuer_not_accepted(built: Built) -> None:
    outcome = deny(built.decide(ctx(headers=bearer(token(iss="https://evil.test")))))
    assert (outcome.status, outcome.description) == (401, "issuer not accepted")


def test_token_from_the_second_issuer_is_claimed_by_it(built: Built) -> None:
    tok = token(iss="https://other.test", aud="x")
    assert allow(built.decide(ctx("/any/x", headers=bearer(tok)))).identity.source == "other-idp"


# --- anonymous routes ---------------------------------------------------------------


def test_anonymous_route_without_credentials_is_allowed(built: Built) -> None:
    outcome = allow(built.decide(ctx("/healthz")))
    assert outcome.identity.kind == "anonymous"
    assert outcome.headers == (("x-tollgate-identity", "anonymous"),)


def test_anonymous_route_with_requirements_is_401(built: Built) -> None:
    outcome = deny(built.decide(ctx("/public-scoped")))
    assert (outcome.status, outcome.code) == (401, "missing_credentials")


def test_anonymous_route_still_checks_presented_credentials(built: Built) -> None:
    outcome = deny(built.decide(ctx("/public-scoped", headers=bearer("a.b.c"))))
    assert (outcome.status, outcome.code) == (401, "invalid_token")


def test_anonymous_route_with_valid_token_and_scope(built: Built) -> None:
    assert allow(built.decide(ctx("/public-scoped", headers=bearer(token(scope="orders:read")))))


# --- requirements ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tenant", "allowed"), [("acme", True), ("acme-eu", True), ("acme2", False), (None, False)]
)
def test_claims_requirement(built: Built, tenant: str | None, allowed: bool) -> None:
    tok = token(tenant=tenant) if tenant else token()
    outcome = built.decide(ctx("/t", host="shop.acme.test", headers=bearer(tok)))
    if allowed:
        assert allow(outcome)
    else:
        assert deny(outcome).description == "claim 'tenant' not accepted"


def test_claims_requirement_list_claim(built: Built) -> None:
    tok = token(tenant=["other", "acme"])
    assert allow(built.decide(ctx("/t", host="a.acme.test", headers=bearer(tok))))


def test_roles_requirement(built: Built) -> None:
    assert allow(built.decide(ctx("/ops", principal=ADMIN)))
    outcome = deny(built.decide(ctx("/ops", headers={"x-api-key": API_KEY})))
    assert (outcome.status, outcome.code, outcome.description) == (
        403,
        "access_denied",
        "required role missing",
    )
    assert outcome.challenge is None


def test_principals_requirement(built: Built) -> None:
    assert allow(built.decide(ctx("/admin/x", principal=ADMIN)))
    outcome = deny(built.decide(ctx("/admin/x", headers=bearer(token(sub="admin")))))
    assert (outcome.status, outcome.description) == (403, "principal not allowed")


def test_principal_requirement_matches_a_jwt_subject_exactly(built: Built) -> None:
    assert allow(built.decide(ctx("/admin/x", headers=bearer(token(sub=ADMIN)))))


def test_missing_scope_is_insufficient_scope(built: Built) -> None:
    outcome = deny(built.decide(ctx(headers=bearer(token(scope="orders:readX")))))
    assert (outcome.status, outcome.code) == (403, "insufficient_scope")
    assert outcome.challenge == (
        'Bearer realm="tollgate", error="insufficient_scope", scope="orders:read"'
    )


# --- matching ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "matches"),
    [
        ("shop.acme.test", True),
        ("a.b.acme.test", True),
        ("SHOP.ACME.TEST", True),
        ("shop.acme.test:8443", True),
        ("acme.test", False),
        (".acme.test", False),
        ("shopacme.test", False),
        ("shop.acme.test.evil", False),
        ("evil-acme.test", False),
    ],
)
def test_host_wildcard(built: Built, host: str, matches: bool) -> None:
    outcome = built.decide(ctx("/t", host=host, headers=bearer(token(tenant="acme"))))
    if matches:
        assert allow(outcome).route == "tenant"
    else:
        assert deny(outcome).code == "no_matching_route"


@pytest.mark.parametrize(
    ("path", "route"),
    [
        ("/orders/1", "orders-read"),
        ("/orders/a-b.c", "orders-read"),
        ("/orders/", None),
        ("/orders/1/2", None),
        ("/orders/1/", None),
        ("/orders", None),
        ("/shops/s1/items/i9/detail", "item"),
        ("/shops/s1/x/items/i9/detail", None),
        ("/shops/s1/items/detail", None),
        ("/shops/s1/items/i9/detailX", None),
    ],
)
def test_template_variable_matches_exactly_one_segment(
    built: Built, path: str, route: str | None
) -> None:
    outcome = built.decide(ctx(path, headers=bearer(token())))
    if route is None:
        assert deny(outcome).code == "no_matching_route"
    else:
        assert allow(outcome).route == route


def test_template_with_regex_characters_is_literal() -> None:
    config = base_config(
        routes=[
            {"name": "r", "match": {"path": {"template": "/a.b/{x}+"}}, "anonymous": True}
        ]
    )
    built = Built(config)
    assert allow(built.decide(ctx("/a.b/1+")))
    assert deny(built.decide(ctx("/aXb/1+"))).code == "no_matching_route"
    assert deny(built.decide(ctx("/a.b/11"))).code == "no_matching_route"


def test_method_mismatch_is_unmatched(built: Built) -> None:
    assert deny(built.decide(ctx(method="DELETE", headers=bearer(token())))).status == 403


def test_unmatched_allow_is_anonymous() -> None:
    built = Built(base_config(unmatched="allow"))
    outcome = allow(built.decide(ctx("/nowhere")))
    assert outcome.identity.kind == "anonymous"
    assert outcome.route == ""


def test_unmatched_deny(built: Built) -> None:
    outcome = deny(built.decide(ctx("/nowhere")))
    assert (outcome.status, outcome.code, outcome.challenge) == (403, "no_matching_route", None)


@pytest.mark.parametrize(
    "path",
    ["/healthz/../admin", "/a//b", "/%2e%2e/admin", "/x\\y", "/a%00", "/a/..;/b", "/a/.;x/b"],
)
def test_ambiguous_path_is_400(built: Built, path: str) -> None:
    outcome = deny(built.decide(ctx(path)))
    assert (outcome.status, outcome.description) == (400, "ambiguous request path")


# --- context extensions ----------------------------------------------------------------


def test_tollgate_route_selects_by_name(built: Built) -> None:
    request = ctx("/healthz", extensions={"tollgate_route": "orders-read"})
    assert deny(built.decide(request)).code == "missing_credentials"


def test_unknown_tollgate_route_is_unmatched(built: Built) -> None:
    request = ctx("/healthz", extensions={"tollgate_route": "nope"})
    assert deny(built.decide(request)).code == "no_matching_route"


def test_unknown_tollgate_route_with_unmatched_allow_is_allowed() -> None:
    built = Built(base_config(unmatched="allow"))
    request = ctx("/orders/1", extensions={"tollgate_route": "nope"})
    assert allow(built.decide(request)).route == ""


def test_tollgate_scopes_adds_required_scopes(built: Built) -> None:
    tok = token(scope="orders:read")
    request = ctx(headers=bearer(tok), extensions={"tollgate_scopes": "orders:export  audit"})
    outcome = deny(built.decide(request))
    assert outcome.code == "insufficient_scope"
    assert 'scope="orders:export audit"' in (outcome.challenge or "")
    tok = token(scope="orders:read orders:export audit")
    request = ctx(headers=bearer(tok), extensions={"tollgate_scopes": "orders:export audit"})
    assert allow(built.decide(request))


def test_tollgate_scopes_on_anonymous_route_is_401(built: Built) -> None:
    request = ctx("/healthz", extensions={"tollgate_scopes": "admin"})
    assert deny(built.decide(request)).code == "missing_credentials"


# --- upstream headers -------------------------------------------------------------------


def test_claim_values_that_could_smuggle_headers_are_dropped() -> None:
    built = Built(base_config(upstream={"claims": {"email": "x-user-email"}}))
    tok = token(email="a@x.test\r\nx-admin: 1", tenant="t" * 2000)
    outcome = allow(built.decide(ctx(headers=bearer(tok))))
    names = dict(outcome.headers)
    assert "x-user-email" not in names
    assert "x-tollgate-tenant" not in names
    assert "x-user-email" in outcome.remove_headers
    assert "x-tollgate-tenant" in outcome.remove_headers
    assert "authorization" in outcome.remove_headers
