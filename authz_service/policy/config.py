"""The policy language of the config file: requirement trees, address rules and the
denials an operator shapes. authz_service.config puts them on routes and the top
level; authz_service.policy.tree, .address and .shaping compile them.
"""

from __future__ import annotations

import ipaddress
import string
from typing import Annotated, Any

from pydantic import Field, field_validator, model_validator

from authz_service.claims import parse_claim_path
from authz_service.config_base import HEADER, Model

# The answers of the policy itself (who may call, from where), not of validation,
# rate limits or failures: what shadow mode lets through, and what a denial shape
# applies to unless it names its own codes.
POLICY_DENIALS = (
    "missing_credentials",
    "invalid_token",
    "insufficient_scope",
    "access_denied",
    "address_denied",
    "peer_not_allowed",
    "no_matching_route",
)
# What a body or redirect template may say. Nothing the client sent but the path
# (never the query string, headers, body or a claim): a template cannot echo a
# credential, whatever the operator writes.
TEMPLATE_FIELDS = frozenset({"code", "description", "status", "route", "request_id", "path"})
# Headers a shape may not set: framing, the challenge and cookies stay ours.
_RESERVED_HEADERS = frozenset(
    {"content-length", "transfer-encoding", "connection", "content-type", "set-cookie",
     "www-authenticate", "location"}
)


class ScopeRule(Model):
    all_of: list[str] = Field(default_factory=list)
    any_of: list[str] = Field(default_factory=list)


class AddressRule(Model):
    """Client addresses (CIDRs) let in or kept out; `deny` wins over `allow`."""

    allow: list[str] = Field(default_factory=list)  # when set, only these
    deny: list[str] = Field(default_factory=list)

    @field_validator("allow", "deny")
    @classmethod
    def _cidrs(cls, value: list[str]) -> list[str]:
        for cidr in value:
            try:
                ipaddress.ip_network(cidr, strict=True)
            except ValueError as exc:
                raise ValueError(f"'{cidr}' is not a network: {exc}") from None
        return value

    @model_validator(mode="after")
    def _something(self) -> AddressRule:
        if not self.allow and not self.deny:
            raise ValueError("an address rule needs 'allow' or 'deny' networks")
        return self


class Requirements(Model):
    """A requirement group: every part set must pass (AND), parts being the leaf groups
    and the nested `all_of` / `any_of` / `not` groups."""

    scopes: ScopeRule | None = None
    roles: ScopeRule | None = None
    # claim path -> accepted values; a list-valued claim passes if any element is accepted
    claims: dict[str, list[str] | str] = Field(default_factory=dict)
    principals: list[str] = Field(default_factory=list)  # subjects / SPIFFE IDs allowed
    address: AddressRule | None = None
    cel: Annotated[str, Field(min_length=1)] | None = None  # a CEL condition that must hold
    all_of: list[Requirements] = Field(default_factory=list)
    any_of: list[Requirements] = Field(default_factory=list)
    not_: Requirements | None = Field(None, alias="not")

    @field_validator("claims")
    @classmethod
    def _claim_paths(cls, value: dict[str, Any]) -> dict[str, Any]:
        for path in value:
            parse_claim_path(path)  # ClaimPathError is a ValueError: pydantic locates it
        return value

    @field_validator("any_of", "all_of")
    @classmethod
    def _not_empty(cls, value: list[Requirements]) -> list[Requirements]:
        if any(group.is_empty() for group in value):
            raise ValueError("an empty requirement group would always pass: remove it")
        return value

    @field_validator("not_")
    @classmethod
    def _not_empty_not(cls, value: Requirements | None) -> Requirements | None:
        if value is not None and value.is_empty():
            raise ValueError("'not' over an empty group would never pass")
        return value

    def is_empty(self) -> bool:
        return not (self.scopes or self.roles or self.claims or self.principals
                    or self.address or self.cel or self.all_of or self.any_of
                    or self.not_ is not None)


class DenialShape(Model):
    """How the denials of a route (or every route) are answered, when not the default
    RFC 6750 / RFC 9457 JSON: another status, more headers, a JSON body template or a
    redirect (browser routes: to a login page)."""

    codes: list[str] = Field(default_factory=lambda: list(POLICY_DENIALS))
    status: int | None = Field(None, ge=300, le=599)
    headers: dict[Annotated[str, Field(pattern=HEADER)], str] = Field(default_factory=dict)
    body: dict[str, Any] | None = None  # JSON; string values are templates
    redirect: Annotated[str, Field(min_length=1)] | None = None  # Location template

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, str]) -> dict[str, str]:
        for name, text in value.items():
            if name in _RESERVED_HEADERS:
                raise ValueError(f"header '{name}' cannot be set by a denial shape")
            if not text.isprintable() or not text.isascii():
                raise ValueError(f"header '{name}': value must be printable ASCII")
            template_fields(text)
        return value

    @model_validator(mode="after")
    def _one_kind(self) -> DenialShape:
        if self.body is not None and self.redirect is not None:
            raise ValueError("set at most one of 'body' or 'redirect'")
        if self.redirect is not None:
            template_fields(self.redirect)
            if self.status is not None and self.status not in (301, 302, 303, 307, 308):
                raise ValueError(f"a redirect needs a 3xx redirect status, not {self.status}")
        elif self.status is not None and self.status < 400:
            raise ValueError(f"status {self.status} is not an error: use 'redirect' for 3xx")
        if self.body is not None:
            _check_body(self.body)
        if not self.codes:
            raise ValueError("'codes' is empty: the shape would apply to nothing")
        return self


def template_fields(text: str) -> list[str]:
    """The `{field}` names in a template; ValueError for anything but a known name."""
    names: list[str] = []
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as exc:
        raise ValueError(f"template '{text}': {exc}") from None
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if name not in TEMPLATE_FIELDS or spec or conversion:
            raise ValueError(
                f"template '{text}': unknown field '{{{name}}}' (known: "
                f"{', '.join(sorted(TEMPLATE_FIELDS))})"
            )
        names.append(name)
    return names


def _check_body(node: Any) -> None:
    if isinstance(node, str):
        template_fields(node)
    elif isinstance(node, dict):
        for value in node.values():
            _check_body(value)
    elif isinstance(node, list):
        for value in node:
            _check_body(value)


