"""Which routes an earlier route hides: every request they match, it matches first.

The engine picks the first route that matches (policy/engine.py), so a route behind
one that covers it never decides anything; the file says one thing and the service
does another. The analysis is exact for what it answers yes to and says nothing it
cannot prove: it reads hosts, methods and path matchers (exact, prefix, template),
and a route matching on anything else is never taken to cover another.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from authz_service.config import PathMatch, RouteMatch, RoutePolicy
from authz_service.policy.routes import template_regex

_READ = frozenset({"hosts", "methods", "path"})  # the matchers this analysis understands
_VARIABLE = re.compile(r"\{[A-Za-z_][A-Za-z0-9_]*\}")


def hiding_routes(routes: Sequence[RoutePolicy]) -> list[tuple[int, list[str]]]:
    """(index of a route that can never match, the earlier routes that take its requests)."""
    hidden: list[tuple[int, list[str]]] = []
    for index, later in enumerate(routes):
        earlier = [r for r in routes[:index] if set(r.match.model_fields_set) <= _READ]
        takers = _takers(earlier, later.match)
        if takers:
            hidden.append((index, takers))
    return hidden


def _takers(earlier: Sequence[RoutePolicy], match: RouteMatch) -> list[str]:
    """Names of earlier routes that together match all of `match`'s requests, or []."""
    covering = [r for r in earlier
                if _hosts_cover(r.match.hosts, match.hosts) and _path_covers(r.match.path,
                                                                            match.path)]
    any_method = [r.name for r in covering if not r.match.methods]
    if any_method:
        return any_method[:1]
    if not match.methods:
        return []  # every method: only a route without methods covers that
    names: list[str] = []
    for method in match.methods:
        taker = next((r.name for r in covering if method in r.match.methods), None)
        if taker is None:
            return []
        if taker not in names:
            names.append(taker)
    return names


def _hosts_cover(outer: Sequence[str], inner: Sequence[str]) -> bool:
    if not outer:
        return True
    if not inner:
        return False
    return all(any(_host_covers(o.lower(), i.lower()) for o in outer) for i in inner)


def _host_covers(outer: str, inner: str) -> bool:
    if outer == inner:
        return True
    if not outer.startswith("*."):
        return False
    suffix = outer[1:]  # ".example.com"
    if inner.startswith("*."):
        return inner[1:].endswith(suffix)
    return inner.endswith(suffix) and len(inner) > len(suffix)


def _path_covers(outer: PathMatch | None, inner: PathMatch | None) -> bool:
    if outer is None or outer.prefix == "/":  # every path Envoy sends starts with '/'
        return True
    if inner is None:
        return False
    if outer.prefix is not None:
        head = inner.exact or inner.prefix or _literal_head(inner.template or "")
        return head.startswith(outer.prefix)
    if outer.exact is not None:
        literal = inner.template if inner.template and "{" not in inner.template else None
        return outer.exact in (inner.exact, literal)
    template = outer.template or ""
    if inner.exact is not None:
        return template_regex(template).fullmatch(inner.exact) is not None
    if inner.template is not None:
        return _template_covers(template, inner.template)
    return False  # a prefix matches paths of any depth, a template a fixed one


def _literal_head(template: str) -> str:
    return template.split("{", 1)[0]


def _template_covers(outer: str, inner: str) -> bool:
    outer_parts, inner_parts = outer.split("/"), inner.split("/")
    if len(outer_parts) != len(inner_parts):
        return False  # a variable never matches '/', so depths must agree
    return all(_segment_covers(o, i) for o, i in zip(outer_parts, inner_parts, strict=True))


def _segment_covers(outer: str, inner: str) -> bool:
    if _VARIABLE.fullmatch(outer):
        return inner != ""  # a variable matches one or more characters
    if "{" not in outer:
        return outer == inner
    if "{" not in inner:
        return template_regex(outer).fullmatch(inner) is not None
    return _VARIABLE.sub("{}", outer) == _VARIABLE.sub("{}", inner)
