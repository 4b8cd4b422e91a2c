"""Which routes an earlier route hides: every request they match, it matches first.

The engine picks the first route that matches (policy/engine.py), so a route behind
one that covers it never decides anything; the file says one thing and the service
does another. The analysis is exact for what it answers yes to and says nothing it
cannot prove: it reads hosts, methods and path matchers (exact, prefix, template),
and a route matching on anything else is never taken to cover another.

Each route is compared only with the earlier routes that could cover it, found by
index (every-path routes, the prefixes of its path, its exact path, templates of its
depth and leading literal segments), so thousands of routes cost milliseconds, at load.
"""

from __future__ import annotations

import functools
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from authz_service.config import PathMatch, RoutePolicy
from authz_service.policy.routes import template_regex

_READ = frozenset({"hosts", "methods", "path"})  # the matchers this analysis understands
_VARIABLE = re.compile(r"\{[A-Za-z_][A-Za-z0-9_]*\}")
# Compiled only when a template must be tried on a literal path, which few pairs need.
_regex = functools.lru_cache(maxsize=4096)(template_regex)


@dataclass(frozen=True, slots=True)
class _Matcher:
    index: int
    name: str
    understood: bool  # matches on nothing but hosts, methods and path
    hosts: tuple[str, ...]
    methods: frozenset[str]
    everything: bool  # no path matcher, or prefix "/"
    exact: str | None
    prefix: str | None
    template: str | None
    segments: tuple[str, ...]  # the template's, split at '/'
    shape: tuple[str, ...]  # the segments with variables unnamed

    @property
    def head(self) -> str:
        """What every path it matches starts with."""
        if self.exact is not None:
            return self.exact
        if self.prefix is not None:
            return self.prefix
        return (self.template or "").split("{", 1)[0]


    @property
    def literal_path(self) -> str | None:
        """The one path it matches, if there is one."""
        if self.exact is not None:
            return self.exact
        return self.template if self.template is not None and "{" not in self.template else None

    @property
    def literal_segments(self) -> tuple[str, ...]:
        """The path's segments up to the first that is not literal."""
        path = self.literal_path
        if path is not None:
            return tuple(path.split("/"))
        leading: list[str] = []
        for segment in self.segments:
            if "{" in segment:
                break
            leading.append(segment)
        return tuple(leading)

    @property
    def depth(self) -> int | None:
        """How many '/'-separated segments every path it matches has, if fixed."""
        path = self.literal_path
        if path is not None:
            return path.count("/") + 1
        return len(self.segments) if self.template is not None else None


class _Index:
    """The routes seen so far, by what would let them cover a later one."""

    def __init__(self) -> None:
        self.everything: list[_Matcher] = []
        self.prefixes: dict[str, list[_Matcher]] = defaultdict(list)
        self.exacts: dict[str, list[_Matcher]] = defaultdict(list)
        self.templates: dict[tuple[int, tuple[str, ...]], list[_Matcher]] = defaultdict(list)

    def add(self, m: _Matcher) -> None:
        if not m.understood:
            return
        if m.everything:
            self.everything.append(m)
        elif m.prefix is not None:
            self.prefixes[m.prefix].append(m)
        elif m.literal_path is not None:
            self.exacts[m.literal_path].append(m)
        elif m.depth is not None:
            self.templates[(m.depth, m.literal_segments)].append(m)

    def candidates(self, m: _Matcher) -> list[_Matcher]:
        """Earlier routes that may cover `m`, in file order."""
        found = list(self.everything)
        head = m.head
        if m.prefix is not None or m.literal_path is not None or m.template is not None:
            for end in range(1, len(head) + 1):
                found += self.prefixes.get(head[:end], ())
        path = m.literal_path
        if path is not None:
            found += self.exacts.get(path, ())
        depth = m.depth
        if depth is not None:
            leading = m.literal_segments
            for end in range(len(leading) + 1):
                found += self.templates.get((depth, leading[:end]), ())
        return sorted(found, key=lambda c: c.index)


def _matcher(index: int, route: RoutePolicy) -> _Matcher:
    match = route.match
    path: PathMatch | None = match.path
    template = path.template if path is not None else None
    segments = tuple(template.split("/")) if template is not None else ()
    return _Matcher(
        index=index,
        name=route.name,
        understood=set(match.model_fields_set) <= _READ,
        hosts=tuple(h.lower() for h in match.hosts),
        methods=frozenset(match.methods),
        everything=path is None or path.prefix == "/",  # every path Envoy sends starts '/'
        exact=path.exact if path is not None else None,
        prefix=path.prefix if path is not None else None,
        template=template,
        segments=segments,
        shape=tuple(_VARIABLE.sub("{}", s) for s in segments),
    )


def hiding_routes(routes: Sequence[RoutePolicy]) -> list[tuple[int, list[str]]]:
    """(index of a route that can never match, the earlier routes that take its requests)."""
    seen = _Index()
    hidden: list[tuple[int, list[str]]] = []
    for index, route in enumerate(routes):
        later = _matcher(index, route)
        takers = _takers(seen.candidates(later), later)
        if takers:
            hidden.append((index, takers))
        seen.add(later)
    return hidden


def _takers(earlier: Sequence[_Matcher], later: _Matcher) -> list[str]:
    """Names of earlier routes that together match all of `later`'s requests, or []."""
    covering = [m for m in earlier if _path_covers(m, later) and _hosts_cover(m, later)]
    any_method = [m.name for m in covering if not m.methods]
    if any_method:
        return any_method[:1]
    if not later.methods:
        return []  # every method: only a route without methods covers that
    names: list[str] = []
    for method in sorted(later.methods):
        taker = next((m.name for m in covering if method in m.methods), None)
        if taker is None:
            return []
        if taker not in names:
            names.append(taker)
    return names


def _hosts_cover(outer: _Matcher, inner: _Matcher) -> bool:
    if not outer.hosts:
        return True
    if not inner.hosts:
        return False
    return all(any(_host_covers(o, i) for o in outer.hosts) for i in inner.hosts)


def _host_covers(outer: str, inner: str) -> bool:
    if outer == inner:
        return True
    if not outer.startswith("*."):
        return False
    suffix = outer[1:]  # ".example.com"
    if inner.startswith("*."):
        return inner[1:].endswith(suffix)
    return inner.endswith(suffix) and len(inner) > len(suffix)


def _path_covers(outer: _Matcher, inner: _Matcher) -> bool:
    if outer.everything:
        return True
    if inner.everything and inner.prefix is None and inner.exact is None \
            and inner.template is None:
        return False  # no path matcher: every path
    if outer.prefix is not None:
        return inner.head.startswith(outer.prefix)
    if outer.exact is not None:
        literal = inner.template if inner.template and "{" not in inner.template else None
        return outer.exact in (inner.exact, literal)
    if inner.exact is not None:
        template = outer.template
        return template is not None and _regex(template).fullmatch(inner.exact) is not None
    if inner.template is not None:
        return _template_covers(outer, inner)
    return False  # a prefix matches paths of any depth, a template a fixed one


def _template_covers(outer: _Matcher, inner: _Matcher) -> bool:
    if len(outer.segments) != len(inner.segments):
        return False  # a variable never matches '/', so depths must agree
    if outer.shape == inner.shape:
        return True
    return all(_segment_covers(o, i, shape)
               for o, i, shape in zip(outer.segments, inner.segments, outer.shape, strict=True))


def _segment_covers(outer: str, inner: str, outer_shape: str) -> bool:
    if outer_shape == "{}":
        return inner != ""  # a variable matches one or more characters
    if "{" not in outer:
        return outer == inner
    if "{" not in inner:
        return _regex(outer).fullmatch(inner) is not None
    return outer_shape == _VARIABLE.sub("{}", inner)
