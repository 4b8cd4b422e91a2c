"""Descriptor actions: each turns the request (and, after authorization, the
identity) into one descriptor entry. Pure.

A registry maps each action's name (its YAML key) to the function that compiles
it, so a new action is one function and one line here. An action answers an
Entry, None (the descriptor is not generated: Envoy's rule when an action cannot
produce its entry) or SKIP (this entry is left out: `skip_if_absent`).
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from authz_service.claims import parse_claim_path, scalar_text
from authz_service.identity import api_key, mtls
from authz_service.identity.naming import credential_id
from authz_service.limits.config import (
    ClaimValue,
    GenericKey,
    HeaderMatcher,
    HeaderValueMatch,
    IdentityValue,
    MaskedRemoteAddress,
    RequestHeaders,
    StringMatch,
)
from authz_service.models import ANONYMOUS_KIND, Identity, RequestContext
from ratelimit_service.models import Entry

MAX_VALUE = 256
_PRINTABLE = re.compile(r"[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?")


class _Skip:
    """This entry is left out; the rest of the descriptor stands."""


SKIP: Final = _Skip()


@dataclass(slots=True)  # per request, like RequestContext: never assigned to
class LimitInput:
    """What a descriptor is built from at one point of the pipeline."""

    ctx: RequestContext
    route: str
    identity: Identity | None = None  # None before authentication


EntryFn = Callable[[LimitInput], "Entry | _Skip | None"]


# What an action's entry depends on, so a set's descriptors can be kept for the next
# request with the same inputs: nothing (a constant), the client address, the identity,
# or anything of the request (headers, method, path: built every time).
NONE, ADDRESS, IDENTITY, REQUEST = "none", "address", "identity", "request"


@dataclass(frozen=True, slots=True)
class ActionKind:
    compile: Callable[[Any, str], EntryFn]  # (the action's config, its name) -> entry function
    needs_identity: bool
    reads: str = IDENTITY


def safe_value(value: str) -> str:
    """A value as a counter key part: printable ASCII up to MAX_VALUE characters kept as
    is; anything else by a stable digest, so it is still counted (never a way around a
    limit) but never carried raw into keys, stats or logs."""
    if len(value) <= MAX_VALUE and _PRINTABLE.fullmatch(value):
        return value
    return "~sha256:" + hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def _entry(key: str, value: str | None) -> Entry | None:
    return None if not value else Entry(key, safe_value(value))


def _header(ctx: RequestContext, name: str) -> str | None:
    if name.startswith(":"):
        return {
            ":method": ctx.method,
            ":path": f"{ctx.path}?{ctx.query}" if ctx.query else ctx.path,
            ":authority": ctx.host,
            ":scheme": ctx.scheme,
        }.get(name)
    value = ctx.headers.get(name)
    return value if isinstance(value, str) else None


def _generic_key(spec: GenericKey, _: str) -> EntryFn:
    entry = Entry(spec.descriptor_key, spec.descriptor_value)
    return lambda _inp: entry


def _remote_address(_spec: object, _: str) -> EntryFn:
    return lambda inp: _entry("remote_address", inp.ctx.source_address)


def _masked_remote_address(spec: MaskedRemoteAddress, _: str) -> EntryFn:
    def masked(inp: LimitInput) -> Entry | None:
        try:
            address = ipaddress.ip_address(inp.ctx.source_address)
        except ValueError:
            return None
        bits = spec.v4_prefix_mask_len if address.version == 4 else spec.v6_prefix_mask_len
        network = ipaddress.ip_network(f"{address}/{bits}", strict=False)
        return Entry("masked_remote_address", str(network))

    return masked


def _request_headers(spec: RequestHeaders, _: str) -> EntryFn:
    def header(inp: LimitInput) -> Entry | _Skip | None:
        value = _header(inp.ctx, spec.header_name)
        if value is None:
            return SKIP if spec.skip_if_absent else None
        return Entry(spec.descriptor_key, safe_value(value))

    return header


def _string_matcher(spec: StringMatch) -> Callable[[str], bool]:
    fold: Callable[[str], str] = str.lower if spec.ignore_case else str
    if spec.safe_regex is not None:
        pattern = re.compile(spec.safe_regex, re.IGNORECASE if spec.ignore_case else 0)
        return lambda value: pattern.fullmatch(value) is not None
    if spec.exact is not None:
        exact = fold(spec.exact)
        return lambda value: fold(value) == exact
    if spec.prefix is not None:
        prefix = fold(spec.prefix)
        return lambda value: fold(value).startswith(prefix)
    if spec.suffix is not None:
        suffix = fold(spec.suffix)
        return lambda value: fold(value).endswith(suffix)
    contains = fold(spec.contains or "")
    return lambda value: contains in fold(value)


def _header_matcher(spec: HeaderMatcher) -> Callable[[RequestContext], bool]:
    string = _string_matcher(spec.string_match) if spec.string_match is not None else None

    def matches(ctx: RequestContext) -> bool:
        value = _header(ctx, spec.name)
        if string is None:
            result = (value is not None) == bool(spec.present_match)
        else:
            result = value is not None and string(value)
        return result != spec.invert_match

    return matches


def _header_value_match(spec: HeaderValueMatch, _: str) -> EntryFn:
    matchers = [_header_matcher(m) for m in spec.headers]
    entry = Entry(spec.descriptor_key, spec.descriptor_value)

    def match(inp: LimitInput) -> Entry | None:
        matched = all(m(inp.ctx) for m in matchers)
        return entry if matched == spec.expect_match else None

    return match


def _identity_value(read: Callable[[Identity], str]) -> Callable[[IdentityValue, str], EntryFn]:
    def compile_action(spec: IdentityValue, name: str) -> EntryFn:
        key = spec.descriptor_key or name
        default = spec.default_value

        def value(inp: LimitInput) -> Entry | None:
            identity = inp.identity
            found = read(identity) if identity is not None else ""
            return _entry(key, found or default)

        return value

    return compile_action


def _proven(identity: Identity) -> bool:
    return identity.kind != ANONYMOUS_KIND


def _claim(spec: ClaimValue, _: str) -> EntryFn:
    path = parse_claim_path(spec.path)

    def claim(inp: LimitInput) -> Entry | None:
        identity = inp.identity
        found = scalar_text(path.read(identity.claims)) if identity is not None else None
        return _entry(spec.descriptor_key, found or spec.default_value)

    return claim


def _route(spec: IdentityValue, name: str) -> EntryFn:
    key = spec.descriptor_key or name
    return lambda inp: _entry(key, inp.route or spec.default_value)


ACTIONS: dict[str, ActionKind] = {
    "generic_key": ActionKind(_generic_key, needs_identity=False, reads=NONE),
    "remote_address": ActionKind(_remote_address, needs_identity=False, reads=ADDRESS),
    "masked_remote_address": ActionKind(_masked_remote_address, needs_identity=False,
                                        reads=ADDRESS),
    "request_headers": ActionKind(_request_headers, needs_identity=False, reads=REQUEST),
    "header_value_match": ActionKind(_header_value_match, needs_identity=False, reads=REQUEST),
    "route": ActionKind(_route, needs_identity=False, reads=NONE),  # the set knows its routes
    "subject": ActionKind(
        _identity_value(lambda i: i.subject if _proven(i) else ""), needs_identity=True),
    "identity_kind": ActionKind(
        _identity_value(lambda i: i.kind), needs_identity=True),
    "issuer": ActionKind(_identity_value(lambda i: i.issuer), needs_identity=True),
    "tenant": ActionKind(_identity_value(lambda i: i.tenant), needs_identity=True),
    "plan": ActionKind(_identity_value(lambda i: i.plan), needs_identity=True),
    # Read by kind: a JWT carrying a `key_id` or `spiffe_id` claim names no key or peer.
    "api_key_id": ActionKind(
        _identity_value(lambda i: credential_id(i, api_key.KIND)), needs_identity=True),
    "principal": ActionKind(
        _identity_value(lambda i: credential_id(i, mtls.KIND)), needs_identity=True),
    "claim": ActionKind(_claim, needs_identity=True),
}
