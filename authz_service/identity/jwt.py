"""JWT bearer tokens from one issuer, verified against its key set, cached."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Annotated, Any, Protocol

from pydantic import Field, field_validator, model_validator

from authz_service.config_base import HEADER, Model
from authz_service.identity.audiences import AudienceSettings
from authz_service.identity.base import Proven
from authz_service.identity.claim_mapping import ClaimMapping, ClaimNames, given_claims
from authz_service.identity.credentials import CookieLocation, HeaderLocation, Location
from authz_service.identity.errors import (
    CredentialError,
    ForeignCredential,
    InvalidCredential,
    KeysUnavailable,
)
from authz_service.identity.given import GivenIdentity
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
from authz_service.identity.token_binding import (
    BindingSettings,
    TokenBindingRules,
    read_binding,
)
from authz_service.identity.token_binding import credential_headers as binding_headers
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


def token_locations(places: Sequence[TokenLocation]) -> list[Location]:
    """The readers of a source's `from:` list, in its order (built once, at load)."""
    return [HeaderLocation(place.header, place.prefix) if place.header
            else CookieLocation(place.cookie or "") for place in places]


def token_headers(places: Sequence[TokenLocation], settings: BindingSettings) -> tuple[str, ...]:
    """The headers a token source's credentials travel in (removed before the upstream):
    its `from:` headers, and DPoP's when it takes DPoP."""
    headers = [place.header for place in places if place.header is not None]
    return tuple(dict.fromkeys(headers + list(binding_headers(settings))))



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


class JwtSource(ClaimNames, BindingSettings, AudienceSettings):
    issuer: Annotated[str, Field(min_length=1)]
    # `audiences` is required (identity/audiences.py): a list, or `any` on purpose.
    jwks_uri: str | None = None
    jwks_file: str | None = None
    discovery: bool = False
    algorithms: list[str] = Field(default_factory=lambda: ["RS256"])
    shared_secret_env: str | None = None  # HS* only: the env var holding the secret
    clock_skew_seconds: float = Field(30, ge=0, le=600)
    required_claims: list[str] = Field(default_factory=lambda: ["exp"])
    token_type: str | None = None  # e.g. at+jwt (RFC 9068): the `typ` header must match
    max_lifetime_seconds: float | None = Field(None, gt=0)
    from_: list[TokenLocation] = Field(
        default_factory=lambda: [TokenLocation(header="authorization")], alias="from"
    )
    refresh: JwksRefresh = Field(default_factory=JwksRefresh)
    allow_insecure_http: bool = False  # http:// key URLs outside loopback
    # Sender-constrained tokens: certificate_binding, dpop, dpop_proof (BindingSettings).

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
        self.mapping = ClaimMapping(KIND, name, config, kept_claims)
        self.algorithms = frozenset(config.algorithms)
        self.locations = token_locations(config.from_)
        self.rules = ClaimRules(
            issuer=config.issuer,
            audiences=config.accepted_audiences(),
            required=frozenset(config.required_claims),
            skew=config.clock_skew_seconds,
            max_lifetime=config.max_lifetime_seconds,
        )
        self.binding = TokenBindingRules(config, max_token_bytes)  # ValueError: bad settings
        self.dpop_algs = self.binding.dpop_algs  # for the challenge

    def authenticate(self, ctx: RequestContext, now: float) -> Identity | Proven | None:
        found = self.binding.find(ctx, self.locations)
        if found is None:
            return None
        token, via_dpop = found
        digest = TokenCache.digest(token)
        generation = self.keys.generation
        cached = self.cache.get(self.name, digest, now, generation)
        if cached is not None:
            return self.binding.hold(cached.identity, cached.binding, ctx, digest,
                                     via_dpop=via_dpop, now=now)
        try:
            parsed = parse(token)
            if parsed.claims.get("iss") != self.rules.issuer:
                raise ForeignCredential("wrong issuer")
            alg = check_header(parsed.header, self.algorithms, self.config.token_type)
            # The claims first (as Envoy's jwt_authn does): an expired, foreign-audience or
            # not-yet-valid token is refused without a signature check or a key refetch,
            # so a client retrying its expired token costs a comparison, not an RSA verify.
            valid_until = check_claims(parsed.claims, self.rules, now)
            verify_signature(parsed, alg, self.keys.key_set)
        except UnknownKeyId as exc:
            raise KeysNeeded(self.name, exc.kid, no_keys=isinstance(exc, NoKeys)) from None
        except TokenError as exc:
            raise InvalidCredential(str(exc)) from None
        claims = parsed.claims
        binding = read_binding(claims)
        self.binding.admit(binding)  # refused before it is cached
        identity = self.identity_of(claims)
        self.cache.put(self.name, digest,
                       CachedIdentity(identity, valid_until, generation, binding))
        return self.binding.hold(identity, binding, ctx, digest, via_dpop=via_dpop, now=now)

    def identity_of(self, claims: dict[str, Any]) -> Identity:
        """Who a verified token's claims say is calling (InvalidCredential: no subject)."""
        return self.mapping.identity(claims, self.rules.issuer)


def build(ctx: SourceContext, config: JwtSource) -> JwtIdentitySource:
    provider = ctx.key_provider(ctx.name, config)  # ValueError: bad key settings
    return JwtIdentitySource(ctx.name, config, provider, ctx.token_cache, ctx.max_token_bytes,
                             kept_claims=ctx.kept_claims)


def given_identity(source: JwtIdentitySource, given: GivenIdentity) -> Identity:
    """A policy test's caller: the identity a verified token with these claims proves."""
    return source.identity_of(given_claims(source.config, given, source.rules.issuer))


def credential_headers(config: JwtSource) -> tuple[str, ...]:
    return token_headers(config.from_, config)
