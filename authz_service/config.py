"""The authz config file format (YAML), as frozen pydantic models.

`compile_config` in `authz_service.compiled` turns a validated AuthzConfig into
the lookup structures the engine uses; this module only describes the file.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

ASYMMETRIC_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
HMAC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})
_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"
_HEADER = r"^[a-z0-9!#$%&'*+.^_`|~-]{1,128}$"


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TokenLocation(Model):
    """Where a bearer token is read from: a header (with a scheme prefix) or a cookie."""

    header: Annotated[str, Field(pattern=_HEADER)] | None = None
    prefix: str = "Bearer "
    cookie: str | None = None

    @model_validator(mode="after")
    def _one_place(self) -> TokenLocation:
        if (self.header is None) == (self.cookie is None):
            raise ValueError("set exactly one of 'header' or 'cookie'")
        return self


class JwksRefresh(Model):
    default_ttl_seconds: float = Field(300, gt=0)
    min_ttl_seconds: float = Field(60, gt=0)
    max_ttl_seconds: float = Field(86400, gt=0)
    unknown_kid_cooldown_seconds: float = Field(30, ge=0)
    # How long a Check waits for an unknown-kid refetch before answering 401 (the
    # fetch goes on): keep it under Envoy's ext_authz timeout (0.5 s in envoy/).
    unknown_kid_wait_seconds: float = Field(0.4, gt=0, le=60)
    timeout_seconds: float = Field(3, gt=0, le=60)
    max_bytes: int = Field(512 * 1024, gt=0, le=16 * 1024 * 1024)
    retry_seconds: float = Field(10, gt=0)


class JwtSource(Model):
    issuer: Annotated[str, Field(min_length=1)]
    audiences: list[str] = Field(default_factory=list)
    jwks_uri: str | None = None
    jwks_file: str | None = None
    discovery: bool = False
    algorithms: list[str] = Field(default_factory=lambda: ["RS256"])
    shared_secret_env: str | None = None  # HS* only: the env var holding the secret
    clock_skew_seconds: float = Field(30, ge=0, le=600)
    required_claims: list[str] = Field(default_factory=lambda: ["exp"])
    token_type: str | None = None  # e.g. at+jwt (RFC 9068): the `typ` header must match
    max_lifetime_seconds: float | None = Field(None, gt=0)
    subject_claim: str = "sub"
    scope_claims: list[str] = Field(default_factory=lambda: ["scope", "scp"])
    roles_claim: str = "roles"
    tenant_claim: str = "tenant"
    plan_claim: str = "plan"
    from_: list[TokenLocation] = Field(
        default_factory=lambda: [TokenLocation(header="authorization")], alias="from"
    )
    refresh: JwksRefresh = Field(default_factory=JwksRefresh)
    allow_insecure_http: bool = False  # http:// key URLs outside loopback

    @field_validator("algorithms")
    @classmethod
    def _known_algorithms(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("at least one algorithm is required")
        for alg in value:
            if alg not in ASYMMETRIC_ALGORITHMS | HMAC_ALGORITHMS:
                raise ValueError(
                    f"algorithm '{alg}' is not supported (allowed: "
                    f"{', '.join(sorted(ASYMMETRIC_ALGORITHMS | HMAC_ALGORITHMS))})"
                )
        return value

    @model_validator(mode="after")
    def _key_material(self) -> JwtSource:
        hmac = [a for a in self.algorithms if a in HMAC_ALGORITHMS]
        asym = [a for a in self.algorithms if a in ASYMMETRIC_ALGORITHMS]
        key_sources = [self.jwks_uri is not None, self.jwks_file is not None, self.discovery]
        if hmac and asym:
            raise ValueError("do not mix HS* with asymmetric algorithms in one issuer")
        if hmac:
            if self.shared_secret_env is None:
                raise ValueError("HS* algorithms need an explicit 'shared_secret_env'")
            if any(key_sources):
                raise ValueError("HS* issuers take no jwks_uri, jwks_file or discovery")
        elif sum(key_sources) != 1:
            raise ValueError("set exactly one of 'jwks_uri', 'jwks_file' or 'discovery: true'")
        elif self.shared_secret_env is not None:
            raise ValueError("'shared_secret_env' is only for HS* algorithms")
        return self


class ApiKeyEntry(Model):
    id: Annotated[str, Field(pattern=_NAME)]  # names the key in logs; never the key itself
    sha256: Annotated[str, Field(pattern=r"^[0-9a-fA-F]{64}$")] | None = None
    sha512: Annotated[str, Field(pattern=r"^[0-9a-fA-F]{128}$")] | None = None
    subject: Annotated[str, Field(min_length=1)]
    scopes: list[str] = Field(default_factory=list)
    roles: list[str] = Field(default_factory=list)
    metadata: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_digest(self) -> ApiKeyEntry:
        if (self.sha256 is None) == (self.sha512 is None):
            raise ValueError("set exactly one of 'sha256' or 'sha512' (the key's hex digest)")
        return self


class ApiKeySource(Model):
    header: Annotated[str, Field(pattern=_HEADER)] = "x-api-key"
    prefix: str = ""  # e.g. "ApiKey " when read from the authorization header
    keys: list[ApiKeyEntry] = Field(default_factory=list)


class MtlsPrincipal(Model):
    spiffe: Annotated[str, Field(pattern=r"^spiffe://[^/\s]+(/\S*)?$")]
    subject: str | None = None
    scopes: list[str] = Field(default_factory=list)
    roles: list[str] = Field(default_factory=list)
    metadata: dict[str, str] = Field(default_factory=dict)


class MtlsSource(Model):
    # Only Envoy's attributes.source.principal (the verified peer certificate's URI
    # SAN) is read; XFCC or any other header is never trusted.
    trust_domains: list[str] = Field(default_factory=list)
    principals: list[MtlsPrincipal] = Field(default_factory=list)
    allow_any_in_trust_domain: bool = False


class IdentitySource(Model):
    name: Annotated[str, Field(pattern=_NAME)]
    jwt: JwtSource | None = None
    api_key: ApiKeySource | None = None
    mtls: MtlsSource | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> IdentitySource:
        kinds = [k for k in ("jwt", "api_key", "mtls") if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError("each identity source needs exactly one of jwt, api_key, mtls")
        return self


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
    def _upper(cls, value: list[str]) -> list[str]:
        return [m.upper() for m in value]


class ScopeRule(Model):
    all_of: list[str] = Field(default_factory=list)
    any_of: list[str] = Field(default_factory=list)


class Requirements(Model):
    scopes: ScopeRule | None = None
    roles: ScopeRule | None = None
    # claim -> accepted values; a list-valued claim passes if any element is accepted
    claims: dict[str, list[str] | str] = Field(default_factory=dict)
    principals: list[str] = Field(default_factory=list)  # subjects / SPIFFE IDs allowed


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
    # Without routes every request gets the `unmatched` answer: the same one for
    # all. That is what an empty, comment-only or half-written (truncated) file
    # says too, so it is only accepted when the file says it on purpose.
    no_routes: bool = False

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
