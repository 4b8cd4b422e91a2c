"""CEL conditions: `require: {cel: '...'}`, compiled and type-checked when the config loads.

The library is cel-expr-python (Google's cel-cpp), chosen by measurement
(bench/policy_bench.py, bench/RESULTS.md): the fastest per evaluation of the three that
install on a realistic request document, and the only one that type-checks at compile
time, so `reqest.method` is a config error, not a denial at 3 a.m.

Two variables, each a map, built per evaluation only if the expression names it:
  request:  method, path, host, scheme, headers (map, lower-case names), query (map,
            first value of each parameter), source_address, and on a route that
            validates its body, body (the JSON body, once the request passes validation;
            a request that fails it fails the condition)
  identity: subject, principal (the same), kind, source, issuer, tenant, plan,
            scopes (list), roles (list), claims (map: what a cached token keeps)
Runtime errors (a missing header key, a wrong type) are CEL error values; anything but
`true` fails the condition: fail closed.

Cost is bounded by the shape of what may be written: at most MAX_EXPRESSION characters
and MAX_MACROS comprehension macros (`all`, `exists`, `map`, `filter`, ...), over inputs
whose sizes Envoy and the token size limit bound.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from cel_expr_python import cel as _cel

from authz_service.identity.base import string_list
from authz_service.models import Identity, RequestContext
from authz_service.policy.tree import Location, Missing, Requirement
from authz_service.validation.request import INVALID
from tollgate.config import LocatedError

BodyReader = Callable[[RequestContext], Any]  # the validated JSON body, or INVALID

MAX_EXPRESSION = 1024
MAX_MACROS = 3
_MACROS = re.compile(r"\.\s*(all|exists|exists_one|map|filter)\s*\(")
_STRINGS = re.compile(r"""'''.*?'''|\"\"\".*?\"\"\"|'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*\"""", re.S)
_ENV = _cel.NewEnv(variables={"request": _cel.Type.DYN, "identity": _cel.Type.DYN})
_NOT_MET = Missing("condition not met")
_INVALID_BODY = Missing("condition not met: the request is not valid")
_READS_BODY = re.compile(r"\brequest\s*\.\s*body\b|\brequest\s*\[\s*\"body\"")


@dataclass(frozen=True, slots=True)
class CelCondition:
    text: str
    program: Any  # a compiled cel_expr_python Expression
    request_fields: frozenset[str] | None  # what it reads of `request`; None: all
    identity_fields: frozenset[str] | None
    uses_request: bool
    uses_identity: bool
    claim_roots: frozenset[str]  # claims it reads; every claim when it cannot tell
    body: BodyReader | None = None  # set when it reads request.body
    label: str = ""
    children: tuple[Requirement, ...] = ()

    def holds(self, identity: Identity, ctx: RequestContext) -> bool:
        return self.failure(identity, ctx) is None

    def failure(self, identity: Identity, ctx: RequestContext) -> Missing | None:
        data: dict[str, Any] = {}
        if self.uses_request:
            data["request"] = request_document(ctx, self.request_fields)
            if self.body is not None:
                document = self.body(ctx)
                if document is INVALID:
                    return _INVALID_BODY
                data["request"]["body"] = document
        if self.uses_identity:
            data["identity"] = identity_document(identity, self.identity_fields)
        # Only a bool true is True: an int, a string or an error value is not.
        return None if self.program.eval(data=data).value() is True else _NOT_MET


def compile_condition(
    text: str, location: Location, body: BodyReader | None = None
) -> CelCondition:
    """A CEL condition, or LocatedError with the reason (the loader adds file:line).
    `body`: the route's validated-body reader, when it validates its body."""
    if len(text) > MAX_EXPRESSION:
        raise LocatedError(location, f"CEL condition longer than {MAX_EXPRESSION} characters")
    code = _STRINGS.sub('""', text)
    if len(_MACROS.findall(code)) > MAX_MACROS:
        raise LocatedError(location, f"CEL condition uses more than {MAX_MACROS} "
                                     "comprehension macros (all/exists/map/filter)")
    try:
        program = _ENV.compile(text)
    except RuntimeError as exc:
        raise LocatedError(location, f"CEL: {_first_error(str(exc))}") from None
    reads_body = _READS_BODY.search(text) is not None
    if reads_body and body is None:
        raise LocatedError(location, "request.body is only there on a route that validates "
                                     "its body ('validate' with a schema or OpenAPI)")
    for variable, known in (("request", {*_REQUEST, "body"}), ("identity", set(_IDENTITY))):
        unknown = sorted((_fields_read(code, variable) or frozenset()) - known)
        if unknown:
            raise LocatedError(location, f"CEL: {variable} has no field '{unknown[0]}' "
                                         f"(it has: {', '.join(sorted(known))})")
    kind = program.return_type()
    if kind not in (_cel.Type.BOOL, _cel.Type.DYN):
        raise LocatedError(location, f"a CEL condition must be a bool, not {kind.name().lower()}")
    return CelCondition(
        text=text,
        program=program,
        request_fields=_fields_read(code, "request"),
        identity_fields=_fields_read(code, "identity"),
        uses_request=re.search(r"\brequest\b", code) is not None,
        uses_identity=re.search(r"\bidentity\b", code) is not None,
        claim_roots=_claim_roots(code),
        body=body if reads_body else None,
        label=f"cel {text}",
    )


def _fields_read(code: str, variable: str) -> frozenset[str] | None:
    # Handing the library a map costs per entry (bench/policy_bench.py): give it only
    # the fields the expression names, or all of them when it uses the variable any
    # other way (`request["path"]`, a macro over it).
    uses = re.findall(rf"\b{variable}\b(\s*\.\s*[A-Za-z_][A-Za-z0-9_]*)?", code)
    if any(not name for name in uses):
        return None
    return frozenset(name.split(".")[-1].strip() for name in uses)


def _claim_roots(code: str) -> frozenset[str]:
    # identity.claims.NAME...: the cache keeps NAME; any other use of identity.claims
    # (claims["x"], a macro over it, a dynamic key) keeps every claim: "*".
    uses = re.findall(r"\bidentity\s*\.\s*claims\b(\s*\.\s*[A-Za-z_][A-Za-z0-9_]*)?", code)
    if any(not name for name in uses):
        return frozenset({"*"})
    return frozenset(name.split(".")[-1].strip() for name in uses)


def _first_error(message: str) -> str:
    # "INVALID_ARGUMENT: ERROR: <input>:1:7: undeclared reference ..." -> the reason,
    # with its column, on one line.
    line = message.splitlines()[0].replace(" (in container '')", "")
    match = re.search(r"<input>:(\d+):(\d+): (.*?)( \[[A-Z_]+\])?$", line)
    if match is None:
        return line
    return f"{match.group(3)} (line {match.group(1)}, column {match.group(2)} of the expression)"


def _query(ctx: RequestContext) -> dict[str, str]:
    query: dict[str, str] = {}
    if ctx.query:
        for name, value in parse_qsl(ctx.query, keep_blank_values=True):
            query.setdefault(name, value)
    return query


_REQUEST: dict[str, Callable[[RequestContext], Any]] = {
    "method": lambda ctx: ctx.method,
    "path": lambda ctx: ctx.path,
    "host": lambda ctx: ctx.host,
    "scheme": lambda ctx: ctx.scheme,
    "headers": lambda ctx: dict(ctx.headers),
    "query": _query,
    "source_address": lambda ctx: ctx.source_address,
}
_IDENTITY: dict[str, Callable[[Identity], Any]] = {
    "subject": lambda i: i.subject,
    "principal": lambda i: i.subject,
    "kind": lambda i: i.kind,
    "source": lambda i: i.source,
    "issuer": lambda i: i.issuer,
    "tenant": lambda i: i.tenant,
    "plan": lambda i: i.plan,
    "scopes": lambda i: sorted(i.scopes),
    "roles": lambda i: string_list(i.claims.get("roles")),
    "claims": lambda i: dict(i.claims),
}


def request_document(ctx: RequestContext, fields: frozenset[str] | None = None
                     ) -> dict[str, Any]:
    """`request` as CEL sees it (only `fields`, when given)."""
    return {k: get(ctx) for k, get in _REQUEST.items() if fields is None or k in fields}


def identity_document(identity: Identity, fields: frozenset[str] | None = None
                      ) -> dict[str, Any]:
    """`identity` as CEL sees it (only `fields`, when given)."""
    return {k: get(identity) for k, get in _IDENTITY.items() if fields is None or k in fields}
