"""JWT bearer tokens from one issuer, verified against its key set, cached."""

from __future__ import annotations

from collections.abc import Sequence
from types import MappingProxyType
from typing import Protocol

from authz_service.config import JwtSource
from authz_service.credentials import CookieLocation, HeaderLocation, Location, find_token
from authz_service.errors import CredentialError, InvalidCredential, KeysUnavailable
from authz_service.identity import string_list
from authz_service.jwt_verifier import (
    ClaimRules,
    NoKeys,
    TokenError,
    UnknownKeyId,
    check_claims,
    check_header,
    parse,
    verify_signature,
)
from authz_service.keys import KeySet
from authz_service.models import Identity, IdentityKind, RequestContext
from authz_service.token_cache import CachedIdentity, TokenCache


class KeyProvider(Protocol):
    """The current key set of an issuer; refreshed elsewhere (see jwks.py)."""

    @property
    def key_set(self) -> KeySet: ...

    @property
    def generation(self) -> int: ...


_NO_CLAIMS: MappingProxyType[str, object] = MappingProxyType({})


class ForeignToken(InvalidCredential):
    """A token from another issuer: reported only if no source claims the token."""


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
    kind = IdentityKind.JWT

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
                raise ForeignToken("wrong issuer")
            alg = check_header(parsed.header, self.algorithms, self.config.token_type)
            verify_signature(parsed, alg, self.keys.key_set)
            valid_until = check_claims(parsed.claims, self.rules, now)
        except UnknownKeyId as exc:
            raise KeysNeeded(self.name, exc.kid, no_keys=isinstance(exc, NoKeys)) from None
        except TokenError as exc:
            raise InvalidCredential(str(exc)) from None
        claims = parsed.claims
        subject = claims.get(self.config.subject_claim)
        if not isinstance(subject, str) or not subject:
            raise InvalidCredential(f"missing required claim '{self.config.subject_claim}'")
        scopes: set[str] = set()
        for claim in self.config.scope_claims:
            scopes.update(string_list(claims.get(claim)))
        kept = {name: claims[name] for name in self.kept_claims if name in claims}
        if self.config.roles_claim in claims:
            kept["roles"] = string_list(claims[self.config.roles_claim])
        tenant = claims.get(self.config.tenant_claim)
        plan = claims.get(self.config.plan_claim)
        identity = Identity(
            kind=IdentityKind.JWT,
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
