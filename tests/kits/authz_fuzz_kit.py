"""Fuzzed CheckRequests against a fixed policy, judged by an independent oracle.

`FuzzTarget` compiles one policy (JWT from a JWKS file, an API key, an mTLS
principal, an anonymous route) and decides a CheckRequest the way the service
does: adapter in, engine (no refetch: the keys are a file), adapter out, an
exception answered as the service answers it (deny). `request(rng)` builds a
hostile request from valid parts and mutations of them; `oracle_allows` says
when an allow is possible at all, from the request alone and rules written
again here, not borrowed from the engine. An allow the oracle cannot explain
is a wrong allow. Used by the Hypothesis test and bench/fuzz_authz.py.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import external_auth_pb2

from authz_service.doors.grpc_wire import AnswerEncoder, to_context
from authz_service.keys.registry import KeyRegistry
from authz_service.models import Allow, Answer, Deny
from authz_service.policy.compiled import CompiledPolicy
from authz_service.policy.engine import NeedKeys, decide
from authz_service.policy.loading import load_policy
from tests.kits import jwt_kit

ADMIN = "spiffe://fuzz.test/ns/ops/sa/admin"
API_KEY = "fz_live_6b1f0c9d2e8a4f71b3c5"
API_KEY_SUBJECT = "svc-fuzz"
_ENCODER = AnswerEncoder()  # the gRPC door's encoding of an answer
ROUTES = ("health", "orders-read", "orders-write", "admin")
# What each route demands, as the config above says (the oracle's own copy).
_ROUTE_SCOPES: dict[str, set[str]] = {
    "health": set(), "orders-read": {"orders:read"}, "orders-write": {"orders:write"},
    "admin": set(),
}
_ROUTE_KINDS: dict[str, set[str]] = {
    "health": {"jwt", "api_key", "mtls"}, "orders-read": {"jwt", "api_key"},
    "orders-write": {"jwt"}, "admin": {"mtls"},
}


def policy_text(jwks_path: Path, *, weakened: bool = False) -> str:
    """The fuzzed policy; `weakened` drops orders-write's scope rule (to prove the
    oracle catches a policy that allows too much)."""
    write_rule = "" if weakened else '\n    require: {scopes: {all_of: ["orders:write"]}}'

    digest = hashlib.sha256(API_KEY.encode()).hexdigest()
    return f"""realm: fuzz
identities:
  - name: idp
    jwt:
      issuer: {jwt_kit.ISSUER}
      audiences: [{jwt_kit.AUDIENCE}]
      jwks_file: {jwks_path}
      algorithms: [RS256, ES256]
      required_claims: [exp, sub]
  - name: partners
    api_key:
      header: x-api-key
      keys:
        - {{id: fuzz, sha256: {digest}, subject: {API_KEY_SUBJECT}, scopes: ["orders:read"]}}
  - name: mesh
    mtls:
      trust_domains: [fuzz.test]
      principals:
        - {{spiffe: "{ADMIN}", scopes: [admin]}}
routes:
  - name: health
    match: {{path: {{exact: /healthz}}}}
    anonymous: true
  - name: orders-read
    match: {{methods: [GET], path: {{template: "/orders/{{id}}"}}}}
    identities: [idp, partners]
    require: {{scopes: {{all_of: ["orders:read"]}}}}
  - name: orders-write
    match: {{methods: [POST], path: {{exact: /orders}}}}
    identities: [idp]{write_rule}
  - name: admin
    match: {{path: {{prefix: /admin}}}}
    identities: [mesh]
    require: {{principals: ["{ADMIN}"]}}
"""


@dataclass(frozen=True)
class Credential:
    token: str
    subject: str
    scopes: frozenset[str]


@dataclass
class Outcome:
    allowed: bool
    wrong_allow: bool
    internal_error: bool
    code: str


@dataclass
class FuzzTarget:
    policy: CompiledPolicy
    now: float
    valid: dict[str, Credential]  # exact token string -> what it proves
    invalid: list[str]  # well-formed tokens that must never pass (expired, wrong aud, ...)
    counts: dict[str, int] = field(default_factory=dict)

    @classmethod
    def build(cls, workdir: Path, *, weakened: bool = False) -> FuzzTarget:
        rsa, ec, stranger = jwt_kit.rsa_key("fz-rsa"), jwt_kit.ec_key("fz-ec"), \
            jwt_kit.rsa_key("fz-stranger")
        jwks = workdir / "jwks.json"
        jwks.write_text(json.dumps(jwt_kit.jwks(rsa, ec)))
        config = workdir / "authz.yaml"
        config.write_text(policy_text(jwks, weakened=weakened))
        policy = load_policy(config, KeyRegistry())
        now = time.time()
        valid = {}
        for sub, key, scope in (("alice", rsa, "orders:read"), ("bob", ec, "orders:write"),
                                ("carol", rsa, "orders:read orders:write"),
                                ("dave", ec, "")):
            token = jwt_kit.mint(key, sub=sub, scope=scope)
            valid[token] = Credential(token, sub, frozenset(scope.split()))
        invalid = [
            jwt_kit.mint(rsa, sub="eve", exp=int(now) - 3600, iat=int(now) - 7200,
                         nbf=int(now) - 7200),
            jwt_kit.mint(rsa, sub="eve", aud="another-api"),
            jwt_kit.mint(rsa, sub="eve", iss="https://evil.test"),
            jwt_kit.mint(stranger, sub="eve", scope="orders:read orders:write"),
            jwt_kit.mint(rsa, sub="eve", nbf=int(now) + 3600),
            jwt_kit.raw_token({"alg": "none", "kid": "fz-rsa"},
                              jwt_kit.claims(sub="eve", scope="orders:read orders:write")),
            jwt_kit.mint(rsa, headers={"crit": ["x"]}, sub="eve", scope="orders:read"),
            jwt_kit.mint(rsa, sub=None, scope="orders:read"),
        ]
        return cls(policy, now, valid, invalid)

    def decide(self, request: external_auth_pb2.CheckRequest) -> Outcome:
        """As the service: adapter, engine, adapter; an exception is a deny."""
        try:
            ctx = to_context(request)
            decision = decide(self.policy, ctx, self.now)
            if isinstance(decision, NeedKeys):  # a JWKS file: no refetch to wait for
                decision = decision.fallback
            answer = external_auth_pb2.CheckResponse.FromString(
                _ENCODER.encode(Answer(decision), ctx.request_id))
        except Exception:  # counted: the service answers these with a deny
            self._count("internal_error")
            return Outcome(False, False, True, "internal_error")
        allowed = answer.status.code == 0
        if allowed != isinstance(decision, Allow):
            raise AssertionError("the CheckResponse disagrees with the decision")
        code = "ok" if isinstance(decision, Allow) else decision.code
        self._count(code)
        wrong = allowed and not self.oracle_allows(request, decision)
        return Outcome(allowed, wrong, False, code)

    def _count(self, code: str) -> None:
        self.counts[code] = self.counts.get(code, 0) + 1

    # --- the oracle: when may this request be allowed at all? -----------------------

    def oracle_allows(
        self, request: external_auth_pb2.CheckRequest, decision: Allow | Deny
    ) -> bool:
        if not isinstance(decision, Allow):
            return False
        http = request.attributes.request.http
        path = http.path.split("?", 1)[0]
        if _ambiguous(path):
            return False
        route = self._route(request, path, http.method.upper())
        if route is None or decision.route != route:
            return False
        need = set(request.attributes.context_extensions.get("tollgate_scopes", "").split())
        need |= _ROUTE_SCOPES[route]
        if route == "admin" and request.attributes.source.principal != ADMIN:
            return False
        identity = decision.identity
        proven = (identity.kind, identity.subject)
        return any(
            (kind, subject) == proven and kind in _ROUTE_KINDS[route] and need <= scopes
            for kind, subject, scopes in self._provable(request)
        ) or (proven == ("anonymous", "anonymous") and route == "health" and not need)

    def _provable(
        self, request: external_auth_pb2.CheckRequest
    ) -> list[tuple[str, str, frozenset[str]]]:
        """Every identity this request's credentials could prove, by the config's rules."""
        found: list[tuple[str, str, frozenset[str]]] = []
        if request.attributes.source.principal == ADMIN:
            found.append(("mtls", ADMIN, frozenset({"admin"})))
        headers = _headers(request)
        if headers.get("x-api-key") == [API_KEY]:
            found.append(("api_key", API_KEY_SUBJECT, frozenset({"orders:read"})))
        carried = " ".join(headers.get("authorization", []))
        found += [("jwt", cred.subject, cred.scopes)
                  for token, cred in self.valid.items() if token in carried]
        return found

    def _route(self, request: external_auth_pb2.CheckRequest, path: str, method: str) -> str | None:
        extensions = request.attributes.context_extensions
        if "tollgate_route" in extensions:
            named = extensions["tollgate_route"]
            return named if named in ROUTES else None
        if path == "/healthz":
            return "health"
        if method == "GET" and re.fullmatch(r"/orders/[^/]+", path):
            return "orders-read"
        if method == "POST" and path == "/orders":
            return "orders-write"
        if path.startswith("/admin"):
            return "admin"
        return None

    # --- hostile requests ----------------------------------------------------------

    def request(self, rng: random.Random) -> external_auth_pb2.CheckRequest:
        request = external_auth_pb2.CheckRequest()
        http = request.attributes.request.http
        http.method = rng.choice(["GET", "GET", "GET", "POST", "POST", "get", "post", "PUT",
                                  "DELETE", "", "G\x00ET", "OPTIONS"])
        http.path = _path(rng)
        http.host = rng.choice(["api.test", "", "evil.test", "API.TEST", "a" * 300])
        http.scheme = rng.choice(["https", "http", ""])
        http.id = rng.choice(["req-1", "", "x" * 100])
        headers = self._headers(rng)
        if rng.random() < 0.3:
            http.header_map.headers.extend(
                base_pb2.HeaderValue(key=k, raw_value=v.encode("utf-8", "surrogatepass"))
                for k, v in headers)
        else:
            for key, value in headers:
                http.headers[key.lower()] = value
        if rng.random() < 0.25:
            request.attributes.source.principal = rng.choice(
                [ADMIN, ADMIN + "/", ADMIN.upper(), "spiffe://fuzz.test/ns/ops/sa/other",
                 "spiffe://evil.test/ns/ops/sa/admin", _mutate(rng, ADMIN), ""])
        if rng.random() < 0.2:
            request.attributes.context_extensions["tollgate_route"] = rng.choice(
                [*ROUTES, "nope", "", "ADMIN"])
        if rng.random() < 0.15:
            request.attributes.context_extensions["tollgate_scopes"] = rng.choice(
                ["orders:read", "orders:write", "admin", "", "x y", "orders:read orders:write"])
        if rng.random() < 0.1:
            http.raw_body = rng.randbytes(rng.randrange(0, 64))
        return request

    def _headers(self, rng: random.Random) -> list[tuple[str, str]]:
        headers: list[tuple[str, str]] = []
        for _ in range(rng.choice([0, 1, 1, 1, 1, 2])):
            cred = self._credential(rng)
            scheme = "Bearer " if rng.random() < 0.6 else rng.choice(
                ["bearer ", "BEARER ", "Bearer  ", "Basic ", "Bearer\t", "", "Token "])
            value = scheme + cred if rng.random() < 0.8 else rng.choice(
                [scheme + cred + "," + self._credential(rng), " " + scheme + cred + " "])
            headers.append(("authorization", value))
        if rng.random() < 0.3:
            headers.append(("x-api-key", rng.choice([API_KEY, _mutate(rng, API_KEY), "",
                                                     API_KEY + " ", API_KEY.upper()])))
        if rng.random() < 0.1:
            headers.append(("x-api-key", API_KEY))
        if rng.random() < 0.2:
            headers.append(("cookie", f"access_token={self._credential(rng)}"))
        forged = ["x-tollgate-subject", "x-tollgate-scopes", "x-forwarded-client-cert",
                  "x-envoy-auth-partial-body", "content-type", "x-user-email", ":authority",
                  "host"]
        for name in rng.sample(forged, k=rng.choice([0, 0, 1, 2])):
            headers.append((name, rng.choice(["admin", ADMIN, "orders:write", "By=" + ADMIN,
                                              "\r\nx: y", "application/json", "true"])))
        rng.shuffle(headers)
        return headers

    def _credential(self, rng: random.Random) -> str:
        pool = rng.random()
        if pool < 0.35:
            base = rng.choice(list(self.valid))
        elif pool < 0.6:
            base = rng.choice(self.invalid)
        elif pool < 0.7:
            base = API_KEY
        else:
            base = rng.choice(list(self.valid) + self.invalid)
            return _mutate(rng, base)
        return base if rng.random() < 0.5 else _mutate(rng, base)


_AMBIGUOUS = re.compile(r"//|/\.\.?(/|$)|\\|%2e|%2f|%5c|%00", re.IGNORECASE)


def _ambiguous(path: str) -> bool:
    """Documented (docs/authz.md, Answers): these paths are refused, never matched."""
    return bool(_AMBIGUOUS.search(path))


def _headers(request: external_auth_pb2.CheckRequest) -> dict[str, list[str]]:
    http = request.attributes.request.http
    found: dict[str, list[str]] = {}
    if http.header_map.headers:
        for header in http.header_map.headers:
            value = header.raw_value.decode("utf-8", "replace") if header.raw_value \
                else header.value
            found.setdefault(header.key.lower(), []).append(value.strip())
    else:
        for key, value in http.headers.items():
            found.setdefault(key.lower(), []).append(value.strip())
    return found


def _path(rng: random.Random) -> str:
    base = rng.choice(["/healthz", "/orders/1", "/orders/1", "/orders", "/orders", "/admin",
                       "/admin/users", "/", "/orders/1/x", "/ORDERS/1", "/healthz/",
                       "/administrator", "/other"])
    roll = rng.random()
    if roll < 0.65:
        return base
    tricks = ["//", "/../", "/./", "%2e%2e/", "%2F", "%5c", "\\", ";", "..;/", "%00", "?a=b",
              "#frag", "\x00", "é", "%252e", "/.", "/..", " ", "\t", "*"]
    if roll < 0.8:
        at = rng.randrange(0, len(base) + 1)
        return base[:at] + rng.choice(tricks) + base[at:]
    return rng.choice(["/admin", "/orders/", "/healthz"]) + "".join(
        rng.choice([*tricks, "a", "1", "/"]) for _ in range(rng.randrange(1, 6)))


def _mutate(rng: random.Random, value: str) -> str:
    if not value:
        return rng.choice(["", "=", "."])
    op = rng.randrange(9)
    at = rng.randrange(len(value))
    if op == 0:  # flip one character
        return value[:at] + rng.choice("AQgw_-=.+/ \x00") + value[at + 1:]
    if op == 1:  # drop one
        return value[:at] + value[at + 1:]
    if op == 2:  # insert one
        return value[:at] + rng.choice("Aa0_-.=") + value[at:]
    if op == 3:  # truncate
        return value[:at]
    if op == 4:  # swap two segments of a JWS
        parts = value.split(".")
        rng.shuffle(parts)
        return ".".join(parts)
    if op == 5:  # another spelling of the same bytes: the last character's unused bits
        last = value[-1]
        alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
        if last in alphabet:
            index = alphabet.index(last) ^ rng.choice([1, 2, 3])
            return value[:-1] + alphabet[index]
        return value + "A"
    if op == 6:  # case
        return value.swapcase()
    if op == 7:  # repeat
        return value + value
    return value + rng.choice(["=", "==", ".", "..", " x"])
