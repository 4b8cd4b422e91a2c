"""Opaque bearer tokens, judged by the authorization server's introspection endpoint
(RFC 7662), its answers cached.

Pure: the HTTP exchange is an Introspector's (authz_service/lookups/introspection.py),
built once per source by the factory in SourceContext. On a cache miss the source
raises LookupNeeded; the pipeline awaits the lookup, which hands the endpoint's
answer to `record` exactly once however many requests wait on it, and decides again.

An answer is only a yes when `active` is true, `exp` (if any) is in the future, `iss`
and `aud` are accepted (when configured), a subject is named and its `cnf` (if any) is
readable. The `cnf` binding (RFC 7662 §2.2) is cached with the yes and the token held to
it on every request, as a JWT is (identity/token_binding.py; RFC 8705 §3.2, RFC 9449
§6.2): a certificate-bound token only from its certificate, a DPoP-bound one only with
a fresh proof by its key. A yes is cached at
most `cache.ttl_seconds` and never past `exp`; a no for `cache.negative_ttl_seconds`.
An endpoint that does not answer usably in time is a 503 `introspection_unavailable`,
never an allow, and is not cached.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Protocol

from pydantic import Field, field_validator, model_validator

from authz_service.config_base import Model
from authz_service.identity.audiences import AudienceSettings
from authz_service.identity.base import Proven, audience_accepted
from authz_service.identity.claim_mapping import ClaimMapping, ClaimNames, given_claims
from authz_service.identity.errors import DependencyUnavailable, InvalidCredential, LookupNeeded
from authz_service.identity.given import GivenIdentity
from authz_service.identity.jwt import (
    ASYMMETRIC_ALGORITHMS,
    TokenLocation,
    token_headers,
    token_locations,
)
from authz_service.identity.token_binding import (
    BindingSettings,
    TokenBinding,
    TokenBindingRules,
    read_binding,
)
from authz_service.identity.token_cache import TokenCache
from authz_service.models import Identity, RequestContext

if TYPE_CHECKING:
    from authz_service.identity.registry import SourceContext

KIND = "introspection"
UNAVAILABLE_CODE = "introspection_unavailable"


class ClientAuth(Model):
    """How the service authenticates to the introspection endpoint (RFC 7662 §2.1).

    Secrets come from an environment variable or a file (a mounted Secret), never from
    the policy file itself; a private key (private_key_jwt, RFC 7523) from a PEM file.
    """

    method: Literal["client_secret_basic", "client_secret_post", "private_key_jwt"]
    client_id: Annotated[str, Field(min_length=1)]
    client_secret_env: str | None = None
    client_secret_file: str | None = None  # relative to the config file
    private_key_file: str | None = None  # relative to the config file
    algorithm: str = "RS256"  # private_key_jwt's signing algorithm: asymmetric only
    key_id: str | None = None  # private_key_jwt: the `kid` header, when the server needs one
    assertion_audience: str | None = None  # private_key_jwt `aud`; default: the endpoint
    assertion_lifetime_seconds: float = Field(60, gt=0, le=600)

    @field_validator("algorithm")
    @classmethod
    def _asymmetric(cls, value: str) -> str:
        if value not in ASYMMETRIC_ALGORITHMS:
            raise ValueError(
                f"algorithm '{value}' is not allowed for private_key_jwt (allowed: "
                f"{', '.join(sorted(ASYMMETRIC_ALGORITHMS))})"
            )
        return value

    @model_validator(mode="after")
    def _credentials(self) -> ClientAuth:
        secrets = [self.client_secret_env, self.client_secret_file]
        if self.method == "private_key_jwt":
            if self.private_key_file is None:
                raise ValueError("private_key_jwt needs 'private_key_file'")
            if any(s is not None for s in secrets):
                raise ValueError("private_key_jwt takes no client secret")
        else:
            if sum(s is not None for s in secrets) != 1:
                raise ValueError(
                    f"{self.method} needs exactly one of 'client_secret_env' or "
                    "'client_secret_file'"
                )
            if self.private_key_file is not None:
                raise ValueError(f"{self.method} takes no 'private_key_file'")
        return self


class IntrospectionCacheSettings(Model):
    max_entries: int = Field(10_000, ge=1)
    # How long a yes is believed without asking again (never past the token's exp):
    # also how long a revoked token may still pass.
    ttl_seconds: float = Field(60, gt=0)
    negative_ttl_seconds: float = Field(5, gt=0)  # how long a no is remembered


class IntrospectionSource(ClaimNames, BindingSettings, AudienceSettings):
    endpoint: Annotated[str, Field(min_length=1)]
    client: ClientAuth
    issuers: list[str] = Field(default_factory=list)  # accepted `iss`; empty: not checked
    # `audiences` is required, as for JWT (identity/audiences.py): an authorization
    # server answers `active` for the tokens it minted for every API it serves.
    scope_claims: list[str] = Field(default_factory=lambda: ["scope"])
    token_type_hint: str | None = "access_token"  # noqa: S105 - a token type, not a secret
    from_: list[TokenLocation] = Field(
        default_factory=lambda: [TokenLocation(header="authorization")], alias="from"
    )
    cache: IntrospectionCacheSettings = Field(default_factory=IntrospectionCacheSettings)
    # The whole exchange (connect, request, answer) is bounded by timeout_seconds; a
    # Check waits for it at most wait_seconds (keep it under Envoy's ext_authz timeout,
    # 0.5 s in envoy/), the exchange going on to fill the cache for the next request.
    timeout_seconds: float = Field(2, gt=0, le=60)
    wait_seconds: float = Field(0.4, gt=0, le=60)
    max_response_bytes: int = Field(64 * 1024, gt=0, le=1024 * 1024)
    # Distinct tokens introspected at once; past it a new token is refused 503 at once
    # instead of queueing on a struggling endpoint.
    max_concurrent: int = Field(64, ge=1, le=10_000)
    allow_insecure_http: bool = False  # http:// endpoints outside loopback
    # Sender-constrained tokens: certificate_binding, dpop, dpop_proof (BindingSettings),
    # as a JWT source has them; an answer's cnf is always held to.


@dataclass(frozen=True, slots=True)
class Verdict:
    """What an introspection answer proved, and until when it may be believed."""

    identity: Identity | None  # None: refused, for `refusal`
    refusal: str
    cached_until: float
    expires_at: float  # the token's exp (inf without one)
    binding: TokenBinding | None = None  # the answer's cnf, held to on every request


class Introspector(Protocol):
    """The I/O side: asks the endpoint about a token, one exchange per distinct token
    at a time, and hands a complete JSON object answer to `record` once."""

    async def settle(
        self, token: str, digest: bytes, record: Callable[[Mapping[str, Any]], bool]
    ) -> None:
        """Returns when `record` was called, or the wait (wait_seconds) is over."""
        ...


# Builds the Introspector of one source; raises ValueError on unusable settings.
IntrospectorFactory = Callable[[str, IntrospectionSource, Path], Introspector]


class IntrospectionCache:
    """A bounded LRU of verdicts, keyed by a hash of the token."""

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[bytes, Verdict] = OrderedDict()

    def get(self, digest: bytes, now: float) -> Verdict | None:
        entry = self._entries.get(digest)
        if entry is None:
            return None
        if now >= entry.cached_until:
            del self._entries[digest]
            if entry.identity is not None and now >= entry.expires_at:
                # Past its exp: no need to ask again (and no 503 if the endpoint is down).
                return Verdict(None, "token expired", 0.0, entry.expires_at)
            return None
        self._entries.move_to_end(digest)
        return entry

    def put(self, digest: bytes, verdict: Verdict) -> None:
        self._entries[digest] = verdict
        self._entries.move_to_end(digest)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


class InvalidAnswer(ValueError):
    """The endpoint's answer is not an introspection response (RFC 7662 §2.2)."""


def judge(
    answer: Mapping[str, Any],
    config: IntrospectionSource,
    mapping: ClaimMapping,
    now: float,
) -> Verdict:
    """The verdict of one introspection answer at `now`. InvalidAnswer: garbage."""
    active = answer.get("active")
    if not isinstance(active, bool):
        raise InvalidAnswer("'active' is missing or not a boolean")
    exp = answer.get("exp")
    if exp is not None and (isinstance(exp, bool) or not isinstance(exp, int | float)
                            or not math.isfinite(exp)):
        raise InvalidAnswer("'exp' is not a number")
    expires_at = float(exp) if exp is not None else float("inf")
    refused_until = now + config.cache.negative_ttl_seconds

    def refused(reason: str) -> Verdict:
        return Verdict(None, reason, refused_until, expires_at)

    if not active:
        return refused("token is not active")
    if now >= expires_at:
        return refused("token expired")
    issuer = answer.get("iss")
    if config.issuers and issuer not in config.issuers:
        return refused("issuer not accepted")
    accepted = config.accepted_audiences()
    if accepted and not audience_accepted(answer.get("aud"), accepted):
        return refused("audience not accepted")
    try:
        identity = mapping.identity(answer, issuer if isinstance(issuer, str) else "")
        binding = read_binding(answer)
    except InvalidCredential as exc:
        return refused(exc.description)
    until = min(now + config.cache.ttl_seconds, expires_at)
    return Verdict(identity, "", until, expires_at, binding)


class IntrospectionIdentitySource:
    kind = KIND

    def __init__(
        self,
        name: str,
        config: IntrospectionSource,
        introspector: Introspector,
        max_token_bytes: int,
        *,
        kept_claims: frozenset[str] = frozenset({"roles"}),
        clock: Callable[[], float] = time.time,
        base_dir: Path | None = None,
    ) -> None:
        base_dir = base_dir or Path.cwd()
        self.name = name
        self.config = config
        self.introspector = introspector
        self.max_token_bytes = max_token_bytes
        self.clock = clock
        self.cache = IntrospectionCache(config.cache.max_entries)
        self.mapping = ClaimMapping(KIND, name, config, kept_claims)
        self.locations = token_locations(config.from_)
        self.binding = TokenBindingRules(config, max_token_bytes)  # ValueError: bad settings
        self.dpop_algs = self.binding.dpop_algs  # for the challenge
        # Files whose change reloads the policy (a rotated Secret): see policy/loading.py.
        self.files = tuple(
            name if name.is_absolute() else base_dir / name
            for name in map(Path, filter(None, (config.client.client_secret_file,
                                                config.client.private_key_file)))
        )
        self._unavailable = DependencyUnavailable(
            UNAVAILABLE_CODE, "the token introspection endpoint is unavailable"
        )

    def authenticate(self, ctx: RequestContext, now: float) -> Identity | Proven | None:
        found = self.binding.find(ctx, self.locations)
        if found is None:
            return None
        token, via_dpop = found
        digest = TokenCache.digest(token)
        verdict = self.cache.get(digest, now)
        if verdict is None:
            raise LookupNeeded(self.name, lambda: self._lookup(token, digest), self._unavailable)
        if verdict.identity is None:
            raise InvalidCredential(verdict.refusal)
        # Every request, the cached answer's too: a bound token from anyone else is refused.
        return self.binding.hold(verdict.identity, verdict.binding, ctx, digest,
                                 via_dpop=via_dpop, now=now)

    def _lookup(self, token: str, digest: bytes) -> Awaitable[None]:
        return self.introspector.settle(token, digest, lambda answer: self._record(digest, answer))

    def _record(self, digest: bytes, answer: Mapping[str, Any]) -> bool:
        """Judge and cache the endpoint's answer; True for a yes. InvalidAnswer: garbage."""
        verdict = judge(answer, self.config, self.mapping, self.clock())
        self.cache.put(digest, verdict)
        return verdict.identity is not None


def build(ctx: SourceContext, config: IntrospectionSource) -> IntrospectionIdentitySource:
    if ctx.introspector is None:
        raise ValueError("introspection sources need the service's HTTP client "
                         "(compile with an introspector factory)")
    introspector = ctx.introspector(ctx.name, config, ctx.base_dir)  # ValueError: bad settings
    return IntrospectionIdentitySource(ctx.name, config, introspector, ctx.max_token_bytes,
                                       kept_claims=ctx.kept_claims, base_dir=ctx.base_dir)


def credential_headers(config: IntrospectionSource) -> tuple[str, ...]:
    return token_headers(config.from_, config)


def given_identity(source: IntrospectionIdentitySource, given: GivenIdentity) -> Identity:
    """A policy test's caller: the identity an active introspection answer proves."""
    issuer = source.config.issuers[0] if source.config.issuers else ""
    claims = given_claims(source.config, given, issuer, "introspection")
    return source.mapping.identity(claims, issuer)  # an issuer the source accepts
