"""JWT bearer tokens from one issuer, verified against its key set, cached."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Annotated, Protocol

from pydantic import Field, field_validator, model_validator

from authz_service.claims import parse_claim_path
from authz_service.config_base import HEADER, Model
from authz_service.identity.base import string_list
from authz_service.identity.credentials import CookieLocation, HeaderLocation, Location, find_token
from authz_service.identity.errors import (
    CredentialError,
    ForeignCredential,
    InvalidCredential,
    KeysUnavailable,
)
from authz_service.identity.jwt_verifier import (
    ClaimRules,
    NoKeys,
    TokenError,
    UnknownKeyId,
    check_claims,
    check_header,
    parse,
    verify_signature,
)
from authz_service.identity.token_cache import CachedIdentity, TokenCache
from authz_service.keys.keyset import KeySet
from authz_service.models import Identity, RequestContext

if TYPE_CHECKING:
    from authz_service.identity.registry import SourceContext

KIND = "jwt"
ASYMMETRIC_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
HMAC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})
_HEADER = HEADER


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

    @field_validator("subject_claim", "roles_claim", "tenant_claim", "plan_claim")
    @classmethod
    def _claim_path(cls, value: str) -> str:
        parse_claim_path(value)  # claim paths: `realm_access.roles`, `["https://x/roles"]`
        return value

    @field_validator("scope_claims")
    @classmethod
    def _claim_paths(cls, value: list[str]) -> list[str]:
        for path in value:
            parse_claim_path(path)
        return value

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


# Builds (or reuses) the key provider for a JWT source; raises ValueError on bad settings.
KeyProviderFactory = Callable[[str, "JwtSource"], "KeyProvider"]


class KeyProvider(Protocol):
    """The current key set of an issuer; refreshed elsewhere (see jwks.py)."""

    @property
    def key_set(self) -> KeySet: ...

    @property
    def generation(self) -> int: ...


_NO_CLAIMS: MappingProxyType[str, object] = MappingProxyType({})


class KeysNeeded(Exception):
    """The token names a kid this issuer's key set lacks: the keys may be stale.

    `error` is the answer if a refetch does not help: an unknown key id, or (the
    set is empty) keys that are unavailable, which is no fault of the client.
    """

    def __init__(self, source: str, kid: str, *, no_keys: bool = False) -> None:
        super().__init__(kid)
        self.source = source
        self.kid = kid
        self.error: CredentialError = (
            KeysUnavailable("signing keys unavailable") if no_keys
            else InvalidCredential("unknown key id")
        )


class JwtIdentitySource:
    kind = KIND

    def __init__(
        self,
        name: str,
        config: JwtSource,
        keys: KeyProvider,
        cache: TokenCache,
        max_token_bytes: int,
        *,
        kept_claims: frozenset[str] = frozenset({"roles"}),
    ) -> None:
        self.name = name
        self.config = config
        self.keys = keys
        self.cache = cache
        self.max_token_bytes = max_token_bytes
        self.kept_claims = kept_claims
        self._scope_sets: dict[frozenset[str], frozenset[str]] = {}
        self.algorithms = frozenset(config.algorithms)
        self.locations: Sequence[Location] = [
            HeaderLocation(loc.header, loc.prefix)
            if loc.header
            else CookieLocation(loc.cookie or "")
            for loc in config.from_
        ]
        self.subject_path = parse_claim_path(config.subject_claim)
        self.scope_paths = tuple(parse_claim_path(p) for p in config.scope_claims)
        self.roles_path = parse_claim_path(config.roles_claim)
        self.tenant_path = parse_claim_path(config.tenant_claim)
        self.plan_path = parse_claim_path(config.plan_claim)
        self.rules = ClaimRules(
            issuer=config.issuer,
            audiences=frozenset(config.audiences),
            required=frozenset(config.required_claims),
            skew=config.clock_skew_seconds,
            max_lifetime=config.max_lifetime_seconds,
        )

    def authenticate(self, ctx: RequestContext, now: float) -> Identity | None:
        token = find_token(ctx, self.locations, self.max_token_bytes)
        if token is None:
            return None
        digest = TokenCache.digest(token)
        generation = self.keys.generation
        cached = self.cache.get(self.name, digest, now, generation)
        if cached is not None:
            return cached
        try:
            parsed = parse(token)
            if parsed.claims.get("iss") != self.rules.issuer:
                raise ForeignCredential("wrong issuer")
            alg = check_header(parsed.header, self.algorithms, self.config.token_type)
            verify_signature(parsed, alg, self.keys.key_set)
            valid_until = check_claims(parsed.claims, self.rules, now)
        except UnknownKeyId as exc:
            raise KeysNeeded(self.name, exc.kid, no_keys=isinstance(exc, NoKeys)) from None
        except TokenError as exc:
            raise InvalidCredential(str(exc)) from None
        claims = parsed.claims
        subject = self.subject_path.read(claims)
        if not isinstance(subject, str) or not subject:
            raise InvalidCredential(f"missing required claim '{self.config.subject_claim}'")
        scopes: set[str] = set()
        for path in self.scope_paths:
            scopes.update(string_list(path.read(claims)))
        if "*" in self.kept_claims:  # a CEL condition reads claims freely
            kept = dict(claims)
        else:
            kept = {name: claims[name] for name in self.kept_claims if name in claims}
        roles = self.roles_path.read(claims)
        if roles is not None:
            kept["roles"] = string_list(roles)
        tenant = self.tenant_path.read(claims)
        plan = self.plan_path.read(claims)
        identity = Identity(
            kind=KIND,
            subject=subject,
            source=self.name,
            scopes=self._shared(frozenset(scopes)),
            claims=MappingProxyType(kept) if kept else _NO_CLAIMS,
            issuer=self.rules.issuer,
            tenant=tenant if isinstance(tenant, str) else "",
            plan=plan if isinstance(plan, str) else "",
        )
        self.cache.put(self.name, digest, CachedIdentity(identity, valid_until, generation))
        return identity

    def _shared(self, scopes: frozenset[str]) -> frozenset[str]:
        """One frozenset per distinct scope set: thousands of cached tokens share a few.

        Bounded: past 1024 distinct sets new ones are simply not shared.
        """
        shared = self._scope_sets.get(scopes)
        if shared is not None:
            return shared
        if len(self._scope_sets) < 1024:
            self._scope_sets[scopes] = scopes
        return scopes


def build(ctx: SourceContext, config: JwtSource) -> JwtIdentitySource:
    provider = ctx.key_provider(ctx.name, config)  # ValueError: bad key settings
    return JwtIdentitySource(ctx.name, config, provider, ctx.token_cache, ctx.max_token_bytes,
                             kept_claims=ctx.kept_claims)


def credential_headers(config: JwtSource) -> tuple[str, ...]:
    return tuple(loc.header for loc in config.from_ if loc.header is not None)
