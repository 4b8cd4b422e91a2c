"""check-config catches the mistakes a file can make while still being YAML.

Refused (exit 1, the service keeps its last good config): a JWT source that does not
say which audiences it accepts, a method no client sends, values of the wrong kind,
each in our words at file:line. Warned (exit 0; 1 with --strict; logged by the
service): an empty policy, a route an earlier one hides, an identity source no route
uses. One fixture per mistake, each with its exact message.
"""

from __future__ import annotations

import io
import json
import subprocess
from pathlib import Path
from types import MappingProxyType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from authz_service.cli import check_config
from authz_service.config import AuthzConfig
from authz_service.keys.keyset import parse_jwks
from authz_service.models import Allow, Deny, RequestContext
from authz_service.policy.advice import advise
from authz_service.policy.compiled import compile_config
from authz_service.policy.engine import decide
from authz_service.policy.routes import compile_route
from authz_service.settings import DEFAULT_CONFIG
from tests.kits import jwt_kit
from tests.kits.grpc_kit import authz_process, check_request
from tests.kits.key_sources import T0, StaticKeys
from tests.kits.processes import binary, wait_for

FIXTURES = Path(__file__).parent / "fixtures" / "check_config"
AUD = ("tokens this issuer mints for any other API would be accepted; list the audiences "
       "this API accepts (the token's aud), or set 'audiences: any' on purpose")

INVALID = {
    "jwt_without_audiences.yaml": f"4: identities[0].jwt: no 'audiences': {AUD}",
    "jwt_empty_audiences.yaml": f"6: identities[0].jwt.audiences: 'audiences' is empty: {AUD}",
    "introspection_without_audiences.yaml": f"3: identities[0].introspection: no "
    f"'audiences': {AUD}",
    "jwt_audiences_all.yaml": "6: identities[0].jwt.audiences: 'audiences' is a list of "
    "audience names, or 'any'",
    "unknown_method.yaml": "7: routes[1].match.methods: 'PSOT' is not an HTTP method "
    "(did you mean POST?); a method of your own is listed under 'extension_methods'",
    "extension_method_name.yaml": "1: extension_methods: 'BA N' is not a method name "
    "(RFC 9110: letters, digits and !#$%&'*+.^_`|~-, at most 64)",
    "unmatched_typo.yaml": "1: unmatched: must be 'deny' or 'allow', found the text 'allwo'",
    "match_is_a_path.yaml": "3: routes[0].match: expected a mapping (key: value), "
    "found the text '/healthz'",
    "anonymous_not_boolean.yaml": "4: routes[0].anonymous: expected true or false, "
    "found the text 'sometimes'",
    "claim_value_kind.yaml": "5: routes[0].require.claims.tenant: expected a list or text, "
    "found the number 5",
    "negative_cache.yaml": "2: token_cache.max_entries: must be at least 0, found -5",
    "bad_route_name.yaml": "2: routes[0].name: 'orders read' is not a name (1-64 letters, "
    "digits, '_', '.', ':' or '-', starting with a letter or digit)",
}

WARNINGS = {
    "empty_policy.yaml": ["3: no_routes: empty policy: no routes, so every request gets "
                          "'unmatched: deny'"],
    "catch_all_first.yaml": ["4: routes[1]: route 'orders' can never match: every request "
                             "it matches is taken first by 'everything'"],
    "prefix_hides_template.yaml": ["5: routes[1]: route 'order-read' can never match: every "
                                   "request it matches is taken first by 'orders-any'"],
    "template_hides_exact.yaml": ["5: routes[1]: route 'order-export' can never match: every "
                                  "request it matches is taken first by 'order-read'"],
    "methods_split.yaml": ["8: routes[2]: route 'orders-mixed' can never match: every request "
                           "it matches is taken first by 'orders-read' and 'orders-write'"],
    "wildcard_host.yaml": ["5: routes[1]: route 'acme-admin' can never match: every request "
                           "it matches is taken first by 'tenants'"],
    "unused_source.yaml": ["7: identities[1].name: identity source 'legacy-keys' is used by "
                           "no route"],
}


def check(path: Path, *, strict: bool = False) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = check_config(str(path), out, err, strict=strict)
    return code, out.getvalue(), err.getvalue()


def test_every_fixture_has_an_expected_message() -> None:
    assert sorted(p.name for p in (FIXTURES / "invalid").glob("*.yaml")) == sorted(INVALID)
    assert sorted(p.name for p in (FIXTURES / "warnings").glob("*.yaml")) == sorted(WARNINGS)


@pytest.mark.parametrize("name", sorted(INVALID))
def test_a_mistake_is_refused_with_file_line_and_reason(name: str) -> None:
    path = FIXTURES / "invalid" / name
    code, out, err = check(path)
    assert (code, out) == (1, "")
    assert err.strip() == f"{path}:{INVALID[name]}"


@pytest.mark.parametrize("name", sorted(WARNINGS))
def test_a_likely_mistake_is_warned_about_and_still_loads(name: str) -> None:
    path = FIXTURES / "warnings" / name
    code, out, err = check(path)
    assert code == 0
    assert out.startswith(f"{path}: ok (")
    assert err.splitlines() == [f"warning: {path}:{w}" for w in WARNINGS[name]]


@pytest.mark.parametrize("name", sorted(WARNINGS))
def test_strict_refuses_a_config_with_warnings(name: str) -> None:
    path = FIXTURES / "warnings" / name
    code, _, err = check(path, strict=True)
    assert code == 1
    assert err.splitlines()[-1] == f"{path}: {len(WARNINGS[name])} warning(s), refused (--strict)"


def test_the_shipped_default_has_no_warnings() -> None:
    assert check(DEFAULT_CONFIG, strict=True)[0::2] == (0, "")


def test_audiences_any_is_accepted_when_said() -> None:
    config = AuthzConfig.model_validate({
        "identities": [{"name": "idp", "jwt": {"issuer": "https://i.test", "audiences": "any",
                                                "jwks_uri": "https://i.test/keys"}}],
        "routes": [{"name": "r"}],
    })
    jwt = config.identities[0].mechanism()[1]
    assert jwt.accepted_audiences() == frozenset()


@pytest.mark.parametrize(("audiences", "allowed"), [("any", True), (["orders-api"], False)])
def test_audiences_any_accepts_a_token_for_another_api_and_a_list_does_not(
    audiences: object, allowed: bool,
) -> None:
    key = jwt_kit.rsa_key("k1")
    keys = StaticKeys(parse_jwks(json.dumps(jwt_kit.jwks(key))))
    config = AuthzConfig.model_validate({
        "identities": [{"name": "idp", "jwt": {"issuer": jwt_kit.ISSUER, "audiences": audiences,
                                                "jwks_uri": "https://idp.test/jwks"}}],
        "routes": [{"name": "r"}],
    })
    policy = compile_config(config, lambda name, source: keys)
    token = jwt_kit.mint(key, aud="billing-api", iat=int(T0), exp=int(T0) + 300)
    ctx = RequestContext("GET", "/x",
                         headers=MappingProxyType({"authorization": f"Bearer {token}"}))
    outcome = decide(policy, ctx, T0)
    assert isinstance(outcome, Allow) is allowed
    if not allowed:
        assert isinstance(outcome, Deny)
        assert (outcome.code, outcome.description) == ("invalid_token", "audience not accepted")


@pytest.mark.parametrize("methods", [["get", "Post"], ["PROPFIND", "MKCOL"], ["PATCH"]])
def test_methods_of_any_case_from_the_registry_are_accepted(methods: list[str]) -> None:
    config = routes({"methods": methods})
    assert config.routes[0].match.methods == [m.upper() for m in methods]


def test_a_method_of_the_policys_own_is_accepted_and_routed_when_listed(tmp_path: Path) -> None:
    path = tmp_path / "authz.yaml"
    path.write_text("extension_methods: [purge, BAN]\nroutes:\n"
                    "  - {name: purge, match: {methods: [PURGE, ban]}, anonymous: true}\n")
    assert check(path)[0] == 0
    without = tmp_path / "without.yaml"
    without.write_text("routes:\n  - {name: purge, match: {methods: [PURGE]}, anonymous: true}\n")
    code, _, err = check(without)
    assert code == 1 and "'PURGE' is not an HTTP method" in err
    from authz_service.config import validation_context
    from authz_service.keys.registry import KeyRegistry
    from authz_service.policy.loading import load_policy

    assert validation_context({"extension_methods": ["purge"]}) == {
        "extension_methods": ["PURGE"]}
    policy = load_policy(path, KeyRegistry())
    assert isinstance(decide(policy, RequestContext("PURGE", "/img/1"), T0), Allow)
    assert isinstance(decide(policy, RequestContext("BAN", "/img/1"), T0), Allow)
    refused = decide(policy, RequestContext("GET", "/img/1"), T0)  # unmatched: deny
    assert isinstance(refused, Deny) and refused.status == 403


def routes(*matches: dict[str, object]) -> AuthzConfig:
    return AuthzConfig.model_validate({"routes": [
        {"name": f"r{i}", "anonymous": True, "match": m} for i, m in enumerate(matches)]})


@pytest.mark.parametrize("matches", [
    # a prefix matches deeper paths than a template ever does
    ({"path": {"template": "/orders/{id}"}}, {"path": {"prefix": "/orders/"}}),
    # /orders does not start with /orders/
    ({"path": {"prefix": "/orders/"}}, {"path": {"exact": "/orders"}}),
    # the earlier route is narrower in host, method or segment
    ({"hosts": ["api.example.com"]}, {"hosts": ["*.example.com"]}),
    ({"hosts": ["*.example.com"]}, {"hosts": ["example.com"]}),
    ({"methods": ["GET"]}, {}),
    ({"methods": ["GET"]}, {"methods": ["GET", "POST"]}),
    ({"path": {"template": "/orders/{id}/items"}}, {"path": {"template": "/orders/{id}/{x}"}}),
    ({"path": {"template": "/orders/{id}.json"}}, {"path": {"template": "/orders/{id}"}}),
    ({"path": {"exact": "/orders"}}, {"path": {"prefix": "/orders"}}),
    ({"path": {"template": "/a/{x}"}}, {"path": {"template": "/a/"}}),
    # an exact path spelt like a template matches only itself
    ({"path": {"exact": "/orders/{id}"}}, {"path": {"template": "/orders/{id}"}}),
])
def test_routes_that_can_still_match_are_not_warned_about(
    matches: tuple[dict[str, object], ...],
) -> None:
    assert advise(routes(*matches)) == []


@pytest.mark.parametrize("matches", [
    ({"path": {"prefix": "/"}}, {"hosts": ["a.test"], "path": {"exact": "/x"}}),
    ({"path": {"template": "/orders/{id}.json"}}, {"path": {"template": "/orders/{n}.json"}}),
    ({"path": {"template": "/orders/{id}.json"}}, {"path": {"exact": "/orders/7.json"}}),
    ({"hosts": ["*.example.com"]}, {"hosts": ["*.eu.example.com", "a.example.com"]}),
    ({"path": {"exact": "/orders"}}, {"methods": ["GET"], "path": {"template": "/orders"}}),
    ({"path": {"template": "/{tenant}/orders"}}, {"path": {"exact": "/acme/orders"}}),
    ({"path": {"prefix": "/a"}}, {"path": {"template": "/ab/{id}"}}),
])
def test_routes_an_earlier_one_covers_are_warned_about(
    matches: tuple[dict[str, object], ...],
) -> None:
    assert advise(routes(*matches)) == [(("routes", 1), "route 'r1' can never match: every "
                                         "request it matches is taken first by 'r0'")]


@pytest.mark.integration
def test_the_tollgate_command_fails_on_warnings_only_with_strict() -> None:
    path = FIXTURES / "warnings" / "catch_all_first.yaml"
    command = [binary("tollgate"), "check-config", "authz", str(path)]
    relaxed = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    strict = subprocess.run([*command, "--strict"], capture_output=True, text=True, timeout=30,
                            check=False)
    assert (relaxed.returncode, strict.returncode) == (0, 1)
    assert relaxed.stderr.splitlines() == [f"warning: {path}:{WARNINGS[path.name][0]}"]


@pytest.mark.integration
def test_the_service_logs_warnings_at_start_and_on_reload(tmp_path: Path) -> None:
    config = tmp_path / "authz.yaml"
    config.write_text((FIXTURES / "warnings" / "catch_all_first.yaml").read_text())
    log = tmp_path / "authz.log"

    def warnings() -> list[str]:
        return [json.loads(line)["warning"] for line in log.read_text().splitlines()
                if '"config warning"' in line]

    with authz_process(config, tmp_path) as (_, client):
        wait_for(lambda: len(warnings()) == 1, what="the warning logged at start")
        assert warnings() == [f"{config}:{WARNINGS['catch_all_first.yaml'][0]}"]
        assert client.check(check_request(path="/orders/1")).allowed
        config.write_text((FIXTURES / "warnings" / "unused_source.yaml").read_text())
        wait_for(lambda: len(warnings()) == 2, what="the reloaded file's warning logged")
    assert warnings()[1] == f"{config}:{WARNINGS['unused_source.yaml'][0]}"


@pytest.mark.integration
def test_a_reload_into_a_refused_config_keeps_the_last_good_one(tmp_path: Path) -> None:
    config = tmp_path / "authz.yaml"
    config.write_text("routes:\n  - name: open\n    anonymous: true\n")
    log = tmp_path / "authz.log"
    with authz_process(config, tmp_path) as (_, client):
        assert client.check(check_request(path="/orders/1")).allowed
        config.write_text((FIXTURES / "invalid" / "jwt_without_audiences.yaml").read_text())
        wait_for(lambda: "config reload rejected" in log.read_text(),
                 what="the file without audiences rejected")
        assert client.check(check_request(path="/orders/1")).allowed  # the last good config
    rejected = [json.loads(line) for line in log.read_text().splitlines()
                if "config reload rejected" in line]
    assert rejected[0]["error"] == f"{config}:{INVALID['jwt_without_audiences.yaml']}"


_SEGMENTS = ["orders", "a", "{id}", "{id}.json", "7.json", ""]
_HOSTS = ["a.example.com", "*.example.com", "b.a.example.com", "example.com"]


@st.composite
def _matches(draw: st.DrawFn) -> dict[str, object]:
    match: dict[str, object] = {}
    if draw(st.booleans()):
        match["methods"] = draw(st.lists(st.sampled_from(["GET", "POST"]), min_size=1,
                                         unique=True))
    if draw(st.booleans()):
        match["hosts"] = draw(st.lists(st.sampled_from(_HOSTS), min_size=1, max_size=2,
                                       unique=True))
    if draw(st.booleans()):
        path = "/" + "/".join(draw(st.lists(st.sampled_from(_SEGMENTS), min_size=1,
                                            max_size=3)))
        kind = draw(st.sampled_from(["exact", "prefix", "template"]))
        if kind != "template":
            path = path.replace("{id}", "7")
        match["path"] = {kind: path}
    return match


def _requests_it_matches(match: dict[str, object]) -> list[RequestContext]:
    """Requests a route with this match takes: each method, host and path shape it allows."""
    methods = match.get("methods") or ["GET", "POST", "PUT"]
    hosts = [h.replace("*", label) for h in match.get("hosts") or ["x.test", "a.example.com"]
             for label in ("c", "b.a")]
    path = match.get("path") or {"prefix": "/"}
    assert isinstance(path, dict) and isinstance(methods, list)
    ((kind, text),) = path.items()
    fillers = ["7", "orders", "x.json", "7.json", "a"]
    if kind == "exact":
        paths = [text]
    elif kind == "prefix":
        paths = [text, *(text + f for f in fillers), *(text + "/" + f for f in fillers)]
    else:
        paths = [text.replace("{id}", f) for f in fillers]
    return [RequestContext(m, p, host=h) for m in methods for h in hosts for p in paths]


@settings(max_examples=400, deadline=None)
@given(st.lists(_matches(), min_size=2, max_size=4))
def test_a_route_said_to_be_hidden_never_decides_a_request(
    matches: list[dict[str, object]],
) -> None:
    config = routes(*matches)
    compiled = [compile_route(r, ()) for r in config.routes]
    for (_, index), _ in advise(config):  # each at ("routes", index)
        assert isinstance(index, int)
        for ctx in _requests_it_matches(matches[index]):
            if compiled[index].matches(ctx):
                assert any(r.matches(ctx) for r in compiled[:index]), (ctx, matches)
