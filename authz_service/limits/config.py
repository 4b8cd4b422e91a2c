"""The `rate_limits:` section of an authz config: frozen pydantic models.

Actions are named and shaped like Envoy's route `rate_limits` actions (one key per
action, as in Envoy's `actions:` list), plus identity actions that only exist after
authentication (`subject`, `plan`, `claim`, ...).
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from authz_service.config_base import NAME, Model

_NAME = NAME
_HEADER = r"^(:?[a-z0-9!#$%&'*+.^_`|~-]{1,128})$"
_KEY = r"^[A-Za-z0-9_.:-]{1,64}$"  # a descriptor key

DescriptorKey = Annotated[str, Field(pattern=_KEY)]


class GenericKey(Model):
    descriptor_value: Annotated[str, Field(min_length=1)]
    descriptor_key: DescriptorKey = "generic_key"


class RemoteAddress(Model):
    """("remote_address", the client IP Envoy determined)."""


class MaskedRemoteAddress(Model):
    """("masked_remote_address", the client's network, e.g. 10.1.2.0/24)."""

    v4_prefix_mask_len: int = Field(32, ge=0, le=32)
    v6_prefix_mask_len: int = Field(128, ge=0, le=128)


class RequestHeaders(Model):
    header_name: Annotated[str, Field(pattern=_HEADER)]  # :method, :path, :authority too
    descriptor_key: DescriptorKey
    skip_if_absent: bool = False  # absent: leave this entry out instead of the descriptor


class StringMatch(Model):
    exact: str | None = None
    prefix: str | None = None
    suffix: str | None = None
    contains: str | None = None
    safe_regex: str | None = None
    ignore_case: bool = False

    @model_validator(mode="after")
    def _one(self) -> StringMatch:
        kinds = [self.exact, self.prefix, self.suffix, self.contains, self.safe_regex]
        if sum(k is not None for k in kinds) != 1:
            raise ValueError("set exactly one of exact, prefix, suffix, contains, safe_regex")
        return self

    @field_validator("safe_regex")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"invalid regex: {exc}") from None
        return value


class HeaderMatcher(Model):
    name: Annotated[str, Field(pattern=_HEADER)]
    string_match: StringMatch | None = None
    present_match: bool | None = None
    invert_match: bool = False

    @model_validator(mode="after")
    def _one(self) -> HeaderMatcher:
        if (self.string_match is None) == (self.present_match is None):
            raise ValueError("set exactly one of string_match or present_match")
        return self


class HeaderValueMatch(Model):
    descriptor_value: Annotated[str, Field(min_length=1)]
    descriptor_key: DescriptorKey = "header_match"
    expect_match: bool = True
    headers: Annotated[list[HeaderMatcher], Field(min_length=1)]


class IdentityValue(Model):
    """An identity attribute as an entry; no value (anonymous, unset) and no default:
    the descriptor is not generated, as Envoy does for a missing metadata value."""

    descriptor_key: DescriptorKey | None = None  # default: the action's name
    default_value: str | None = None


class ClaimValue(Model):
    path: Annotated[str, Field(min_length=1)]  # a claim path: realm_access.roles, a."b.c"
    descriptor_key: DescriptorKey
    default_value: str | None = None


class Action(Model):
    """Exactly one action (Envoy's RateLimit.Action oneof)."""

    generic_key: GenericKey | None = None
    remote_address: RemoteAddress | None = None
    masked_remote_address: MaskedRemoteAddress | None = None
    request_headers: RequestHeaders | None = None
    header_value_match: HeaderValueMatch | None = None
    # Identity actions: only in `after_authz` sets.
    subject: IdentityValue | None = None
    identity_kind: IdentityValue | None = None
    issuer: IdentityValue | None = None
    tenant: IdentityValue | None = None
    plan: IdentityValue | None = None
    api_key_id: IdentityValue | None = None
    principal: IdentityValue | None = None  # the mTLS SPIFFE ID
    route: IdentityValue | None = None  # the route policy's name
    claim: ClaimValue | None = None

    @model_validator(mode="after")
    def _one(self) -> Action:
        if len(self.model_fields_set) != 1 or self.kind()[1] is None:
            raise ValueError(f"set exactly one action ({', '.join(type(self).model_fields)})")
        return self

    def kind(self) -> tuple[str, Model | None]:
        name = next(iter(self.model_fields_set))
        value: Model | None = getattr(self, name)
        return name, value


class DescriptorSpec(Model):
    """One descriptor: its entries in order, one per action (Envoy's RateLimit)."""

    actions: Annotated[list[Action], Field(min_length=1, max_length=16)]
    hits_addend: int = Field(1, ge=0, le=1_000_000)


class LimitSet(Model):
    name: Annotated[str, Field(pattern=_NAME)]
    stage: Literal["before_authn", "after_authz"]
    routes: list[Annotated[str, Field(pattern=_NAME)]] | None = None  # None: every route
    descriptors: Annotated[list[DescriptorSpec], Field(min_length=1, max_length=16)]
    # Over the limit: answer as if not (counted and logged as would-limit).
    shadow: bool = False
    # The store cannot be reached: `open` allows (counted and logged), `closed` answers 503;
    # the words of ratelimit-service's --store-failure-mode. Always said.
    store_failure_mode: Literal["open", "closed"]


class RateLimits(Model):
    rules: Annotated[str, Field(min_length=1)]  # envoyproxy/ratelimit YAML file or directory
    domain: Annotated[str, Field(min_length=1)]
    merge_domains: bool = False  # the reference's MERGE_DOMAIN_CONFIG for that directory
    headers: Literal["draft03", "reference", "ietf", "none"] = "draft03"
    sets: Annotated[list[LimitSet], Field(min_length=1)]
