"""Policy tests (`tollgate test`): requests with the callers they come from, and the
answer the policy must give, decided offline by the pure engine as `opa test` does.

A test states its caller (source, subject, scopes, claims, key id or SPIFFE ID)
instead of carrying a token: the named source's mechanism turns it into the Identity
it would prove for a real credential (identity/registry.py `given_identity`), and the
request is decided by `engine.decide` on the compiled policy, with that source
standing in on every route that lists it. Route selection, the route's source order,
anonymous routes, requirements, validation and upstream headers are the service's
own; rate limits (a counter store) are not part of a policy test.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationInfo, field_validator

from authz_service.config import method_extensions
from authz_service.config_base import Model
from authz_service.identity.base import Proven
from authz_service.identity.errors import CredentialError
from authz_service.identity.given import GivenIdentity
from authz_service.identity.registry import KINDS
from authz_service.methods import known_methods
from authz_service.models import Allow, Decision, Identity, RequestContext
from authz_service.policy.compiled import CompiledPolicy
from authz_service.policy.engine import NeedKeys, NeedLookup, decide, finish
from authz_service.policy.engine import route as engine_route
from authz_service.policy.routes import CompiledRoute
from tollgate.config import LocatedError


class SuiteRequest(Model):
    method: str = "GET"
    path: Annotated[str, Field(pattern=r"^/")]
    host: str = ""
    query: str = ""
    headers: dict[str, str] = Field(default_factory=dict)
    source_address: str = ""
    # A JSON body (a mapping or list, sent as JSON) or text, for validated routes.
    body: dict[str, Any] | list[Any] | str | None = None
    context_extensions: dict[str, str] = Field(default_factory=dict)

    @field_validator("method")
    @classmethod
    def _method(cls, value: str, info: ValidationInfo) -> str:
        return known_methods([value], method_extensions(info))[0]


class Expectation(Model):
    decision: Literal["allow", "deny"]
    status: int | None = None  # the HTTP status of a denial (403, 401, 400, 429, 503)
    code: str | None = None  # the stable denial code (authz_service/contract.py)
    route: str | None = None  # the route that decided
    upstream_headers: dict[str, str] = Field(default_factory=dict)  # set on an allow


class PolicyTest(Model):
    name: Annotated[str, Field(min_length=1)]
    request: SuiteRequest
    identity: GivenIdentity | None = None  # None: a request without credentials
    expect: Expectation


class PolicySuite(Model):
    tests: Annotated[list[PolicyTest], Field(min_length=1)]


@dataclass(frozen=True)
class CaseResult:
    test: PolicyTest
    index: int
    got: str  # the decision, in the expectation's terms
    failures: tuple[str, ...]  # empty: passed

    @property
    def passed(self) -> bool:
        return not self.failures


class StandIn:
    """An identity source that proves the test's caller, whatever the request carries."""

    def __init__(self, name: str, kind: str, proof: Identity | CredentialError) -> None:
        self.name = name
        self.kind = kind
        self.proof = proof

    def authenticate(self, ctx: RequestContext, now: float) -> Identity | None:
        if isinstance(self.proof, CredentialError):
            raise self.proof
        return self.proof


def check_suite(suite: PolicySuite, policy: CompiledPolicy) -> list[StandIn | None]:
    """Each test's stand-in source; LocatedError when a test names what the policy lacks."""
    stand_ins: list[StandIn | None] = []
    for index, test in enumerate(suite.tests):
        given = test.identity
        if given is None:
            stand_ins.append(None)
            continue
        source = policy.sources.get(given.source)
        if source is None:
            known = ", ".join(policy.sources) or "none"
            raise LocatedError(("tests", index, "identity", "source"),
                               f"unknown identity source '{given.source}' (the policy's: {known})")
        if given.kind is not None and given.kind != source.kind:
            raise LocatedError(("tests", index, "identity", "kind"),
                               f"identity source '{source.name}' is {source.kind}, "
                               f"not {given.kind}")
        proof: Identity | CredentialError
        try:
            proof = KINDS[source.kind].given_identity(source, given)
        except CredentialError as exc:
            proof = exc  # the source refuses this caller: the policy test hears how
        except ValueError as exc:
            raise LocatedError(("tests", index, "identity"), str(exc)) from None
        stand_ins.append(StandIn(source.name, source.kind, proof))
    return stand_ins


def run_suite(
    suite: PolicySuite, policy: CompiledPolicy, stand_ins: list[StandIn | None], now: float
) -> list[CaseResult]:
    results = []
    for index, (test, stand_in) in enumerate(zip(suite.tests, stand_ins, strict=True)):
        decided = decide(_with(policy, stand_in), _context(test.request), now, may_refetch=False)
        # Offline: no key is fetched and no introspection made; what would wait on one
        # answers as it would if the I/O settled nothing.
        decision = decided.fallback if isinstance(decided, NeedKeys | NeedLookup) else decided
        if isinstance(decision, Proven):  # a real DPoP token and proof in the request:
            # permitted; offline there is no replay store, so its proof counts as fresh
            decision = _finished(policy, stand_in, _context(test.request), decision)
        results.append(CaseResult(test, index, describe(decision),
                                  tuple(_mismatches(test.expect, decision))))
    return results


def describe(decision: Decision) -> str:
    route = f" on route '{decision.route}'" if decision.route else ""
    if isinstance(decision, Allow):
        return f"allow{route}"
    return f"deny {decision.status} {decision.code}{route}"


def expected_text(expect: Expectation) -> str:
    parts: list[str] = [expect.decision]
    parts += [str(v) for v in (expect.status, expect.code) if v is not None]
    if expect.route is not None:
        parts.append(f"on route '{expect.route}'")
    return " ".join(parts)


def _mismatches(expect: Expectation, decision: Decision) -> list[str]:
    if (expect.decision == "allow") != isinstance(decision, Allow):
        return [f"expected {expected_text(expect)}, got {describe(decision)}"]
    found: list[str] = []
    if expect.route is not None and decision.route != expect.route:
        found.append(f"expected route '{expect.route}', got '{decision.route or '(none)'}'")
    if isinstance(decision, Allow):
        sent = dict(decision.headers)
        for name, value in expect.upstream_headers.items():
            if sent.get(name) != value:
                got = "not set" if name not in sent else f"'{sent[name]}'"
                found.append(f"expected upstream header {name}: '{value}', got {got}")
        return found
    if expect.status is not None and decision.status != expect.status:
        found.append(f"expected status {expect.status}, got {decision.status}")
    if expect.code is not None and decision.code != expect.code:
        found.append(f"expected code '{expect.code}', got '{decision.code}' "
                     f"({decision.description})")
    return found


def _with(policy: CompiledPolicy, stand_in: StandIn | None) -> CompiledPolicy:
    if stand_in is None:
        return policy

    def swap(route: CompiledRoute) -> CompiledRoute:
        sources = tuple(stand_in if s.name == stand_in.name else s for s in route.sources)
        return replace(route, sources=sources)

    routes = tuple(swap(r) for r in policy.routes)
    return replace(policy, routes=routes, routes_by_name={r.name: r for r in routes})


def _context(request: SuiteRequest) -> RequestContext:
    headers = {k.lower(): v for k, v in request.headers.items()}
    body = request.body
    raw = b""
    if isinstance(body, str):
        raw = body.encode()
    elif body is not None:
        raw = json.dumps(body).encode()
        headers.setdefault("content-type", "application/json")
    if raw:
        headers.setdefault("content-length", str(len(raw)))
    return RequestContext(
        method=request.method,
        path=request.path,
        host=request.host,
        query=request.query,
        headers=MappingProxyType(headers),
        context_extensions=MappingProxyType(dict(request.context_extensions)),
        body=raw,
        source_address=request.source_address,
    )


def _finished(
    policy: CompiledPolicy, stand_in: StandIn | None, ctx: RequestContext, proven: Proven
) -> Decision:
    """The answer for a permitted caller whose proof of possession was taken as fresh."""
    with_stand_in = _with(policy, stand_in)
    routed = engine_route(with_stand_in, ctx)
    if not isinstance(routed, CompiledRoute):
        return routed
    return finish(with_stand_in, routed, proven.identity, ctx)
