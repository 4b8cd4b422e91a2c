"""The authz config file format (YAML), as frozen pydantic models.

`compile_config` in `authz_service.policy.compiled` turns a validated AuthzConfig into
the lookup structures the engine uses; this module only describes the file. Each
identity mechanism's own settings live with the mechanism (authz_service.identity).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field, ValidationInfo, create_model, field_validator, model_validator

from authz_service.claims import parse_claim_path
from authz_service.config_base import HEADER, NAME, Model
from authz_service.identity.registry import KINDS
from authz_service.limits.config import RateLimits
from authz_service.methods import EXTENSIONS, extension_methods, known_methods
from authz_service.policy.config import (
    AddressRule,
    DenialShape,
    Requirements,
    ScopeRule,
)

__all__ = ["AddressRule", "DenialShape", "Requirements", "ScopeRule"]

_NAME = NAME
_HEADER = HEADER


class IdentitySourceBase(Model):
    """An identity source: its name and exactly one mechanism, under the mechanism's key
    (the keys are the registry's, authz_service.identity.registry)."""

    name: Annotated[str, Field(pattern=_NAME)]

    @model_validator(mode="after")
    def _one_kind(self) -> IdentitySourceBase:
        if len(self._kinds()) != 1:
            raise ValueError(f"each identity source needs exactly one of {', '.join(KINDS)}")
        return self

    def _kinds(self) -> list[str]:
        return [k for k in KINDS if getattr(self, k, None) is not None]

    def mechanism(self) -> tuple[str, Any]:
        """(the mechanism's registry name, its settings)."""
        (kind,) = self._kinds()
        return kind, getattr(self, kind)


if TYPE_CHECKING:
    IdentitySource = IdentitySourceBase
else:
    # One optional field per registered mechanism: adding a mechanism adds its key here.
    IdentitySource = create_model(
        "IdentitySource",
        __base__=IdentitySourceBase,
        **{kind: (spec.config | None, None) for kind, spec in KINDS.items()},
    )


class PathMatch(Model):
    exact: str | None = None
    prefix: str | None = None
    template: str | None = None  # /orders/{id}; a segment variable matches one segment

    @model_validator(mode="after")
    def _one_kind(self) -> PathMatch:
        set_ = [v for v in (self.exact, self.prefix, self.template) if v is not None]
        if len(set_) != 1:
            raise ValueError("set exactly one of 'exact', 'prefix' or 'template'")
        if not set_[0].startswith("/"):
            raise ValueError("paths start with '/'")
        return self


class RouteMatch(Model):
    hosts: list[str] = Field(default_factory=list)  # exact or "*.example.com"
    methods: list[str] = Field(default_factory=list)
    path: PathMatch | None = None

    @field_validator("methods")
    @classmethod
    def _upper(cls, value: list[str], info: ValidationInfo) -> list[str]:
        return known_methods(value, method_extensions(info))


def method_extensions(info: ValidationInfo) -> frozenset[str]:
    """The policy's `extension_methods`, which the loader hands its models as context."""
    given = (info.context or {}).get(EXTENSIONS, ())
    return frozenset(given)


def validation_context(data: Any) -> dict[str, Any]:
    """What validating the policy file `data` needs to know before its routes: the
    methods it declares its own (each checked again, with its place, as a field)."""
    declared = data.get(EXTENSIONS) if isinstance(data, dict) else None
    if not isinstance(declared, list):
        return {}
    usable = []
    for method in declared:
        try:
            usable += extension_methods([str(method)])
        except ValueError:
            continue  # reported where it is written, by AuthzConfig's own field
    return {EXTENSIONS: usable}


class OpenApiSpec(Model):
    file: Annotated[str, Field(min_length=1)]  # relative to the config file
    base_path: str = ""  # prefix before the document's paths, e.g. /v1


class Validation(Model):
    """Request validation on a route: after authorization, before the answer."""

    # JSON Schema 2020-12 for the JSON body: inline, or a file path relative to the config.
    json_schema: dict[str, Any] | bool | str | None = Field(None, alias="schema")
    openapi: OpenApiSpec | None = None
    content_types: list[str] = Field(default_factory=lambda: ["application/json"])
    body_required: bool = True  # with `schema`; OpenAPI's requestBody.required wins there
    max_body_bytes: int = Field(65536, ge=1, le=8 * 1024 * 1024)
    max_depth: int = Field(32, ge=1, le=512)
    max_number_chars: int = Field(40, ge=16, le=1000)
    max_header_value_bytes: int = Field(8192, ge=256, le=1 << 20)
    single_headers: list[Annotated[str, Field(pattern=_HEADER)]] = Field(default_factory=list)

    @model_validator(mode="after")
    def _one_source(self) -> Validation:
        if self.json_schema is not None and self.openapi is not None:
            raise ValueError("set at most one of 'schema' or 'openapi'")
        return self


class RoutePolicy(Model):
    name: Annotated[str, Field(pattern=_NAME)]
    match: RouteMatch = Field(default_factory=RouteMatch)
    anonymous: bool = False  # public route: no credentials needed (credentials still checked)
    identities: list[str] | None = None  # identity source names, tried in order
    require: Requirements = Field(default_factory=Requirements)
    validate_: Validation | None = Field(None, alias="validate")  # see docs: Request validation
    address: AddressRule | None = None  # client networks let in, checked before identity
    shadow: bool = False  # dry run: a denial is logged and counted, the request allowed
    deny: DenialShape | None = None  # how this route's denials are answered


class UpstreamHeaders(Model):
    subject: str | None = "x-tollgate-subject"
    identity: str | None = "x-tollgate-identity"
    scopes: str | None = "x-tollgate-scopes"
    tenant: str | None = "x-tollgate-tenant"
    plan: str | None = "x-tollgate-plan"
    claims: dict[str, Annotated[str, Field(pattern=_HEADER)]] = Field(default_factory=dict)
    strip_credential: bool = True

    @field_validator("subject", "identity", "scopes", "tenant", "plan")
    @classmethod
    def _header_name(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(_HEADER, value):
            raise ValueError(f"'{value}' is not a lower-case header name")
        return value

    @field_validator("claims")
    @classmethod
    def _claim_paths(cls, value: dict[str, str]) -> dict[str, str]:
        for path in value:
            parse_claim_path(path)
        return value


class Limits(Model):
    max_token_bytes: int = Field(8192, ge=256, le=65536)


class TokenCacheSettings(Model):
    # ~3.4 KB of RSS per entry with its kept answer, fragmentation included
    # (bench/rss_soak.py): 5k ~ 17 MB.
    # Envoy's own jwt_authn cache holds 100 tokens by default; a miss costs one
    # signature check (~70 µs for RS256).
    max_entries: int = Field(5_000, ge=0)


class AuthzConfig(Model):
    realm: str = "tollgate"
    unmatched: Literal["deny", "allow"] = "deny"
    on_error: Literal["deny", "error"] = "deny"
    limits: Limits = Field(default_factory=Limits)
    token_cache: TokenCacheSettings = Field(default_factory=TokenCacheSettings)
    identities: list[IdentitySource] = Field(default_factory=list)
    routes: list[RoutePolicy] = Field(default_factory=list)
    upstream: UpstreamHeaders = Field(default_factory=UpstreamHeaders)
    address: AddressRule | None = None  # for every request, before any route
    shadow: bool = False  # dry run for the whole policy (see RoutePolicy.shadow)
    deny: DenialShape | None = None  # the shape of every route's denials without its own
    # Rate limits decided in the same Check (authz_service.limits).
    rate_limits: RateLimits | None = None
    # Methods no registry lists that this API uses on purpose (PURGE, BAN, ...).
    extension_methods: list[str] = Field(default_factory=list)
    # Without routes every request gets the `unmatched` answer: the same one for
    # all. That is what an empty, comment-only or half-written (truncated) file
    # says too, so it is only accepted when the file says it on purpose.
    no_routes: bool = False

    @field_validator("extension_methods")
    @classmethod
    def _method_names(cls, value: list[str]) -> list[str]:
        return extension_methods(value)

    @model_validator(mode="before")
    @classmethod
    def _not_empty(cls, data: Any) -> Any:
        if data is None or data == {}:
            raise ValueError("empty config: nothing but comments or whitespace")
        return data

    @model_validator(mode="after")
    def _decides_something(self) -> AuthzConfig:
        if self.routes and self.no_routes:
            raise ValueError(f"'no_routes: true' but {len(self.routes)} route(s) are configured")
        if not self.routes and not self.no_routes:
            every = "allow" if self.unmatched == "allow" else "deny"
            raise ValueError(
                f"no routes: this config would {every} every request "
                "(add routes, or set 'no_routes: true' if that is intended)"
            )
        return self
