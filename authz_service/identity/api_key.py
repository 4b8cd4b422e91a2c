"""API keys, stored only as SHA-256/SHA-512 digests and compared in constant time.

The presented key is hashed and the digest looked up; the final comparison is
hmac.compare_digest. Looking up by digest leaks nothing useful: an attacker who
could steer the lookup would need SHA-256 preimages.
"""

from __future__ import annotations

import hashlib
import hmac
from types import MappingProxyType
from typing import TYPE_CHECKING, Annotated

from pydantic import Field, model_validator

from authz_service.config_base import HEADER, NAME, Model
from authz_service.identity.credentials import HeaderLocation, read_header_credential
from authz_service.identity.errors import InvalidCredential
from authz_service.identity.given import GivenIdentity
from authz_service.models import Identity, RequestContext
from tollgate.config import worded_pattern

if TYPE_CHECKING:
    from authz_service.identity.registry import SourceContext

KIND = "api_key"
ID_CLAIM = "key_id"  # the claim an API key identity names its key by (keys[].id)
_NAME = NAME
_HEADER = HEADER
_SHA256 = worded_pattern(r"^[0-9a-fA-F]{64}$", "a SHA-256 digest (64 hex digits)")
_SHA512 = worded_pattern(r"^[0-9a-fA-F]{128}$", "a SHA-512 digest (128 hex digits)")


class ApiKeyEntry(Model):
    id: Annotated[str, Field(pattern=_NAME)]  # names the key in logs; never the key itself
    sha256: Annotated[str, Field(pattern=_SHA256)] | None = None
    sha512: Annotated[str, Field(pattern=_SHA512)] | None = None
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


class ApiKeyIdentitySource:
    kind = KIND

    def __init__(self, name: str, config: ApiKeySource, max_key_bytes: int) -> None:
        self.name = name
        self.location = HeaderLocation(config.header, config.prefix)
        self.max_key_bytes = max_key_bytes
        self.sha256 = {e.sha256.lower(): e for e in config.keys if e.sha256}
        self.sha512 = {e.sha512.lower(): e for e in config.keys if e.sha512}
        # One Identity per key, built once: what is derived from it (its Allow per
        # route, the bytes a door sends) is then built once too.
        self.identities = {id(e): self._identity(e) for e in config.keys}
        self.by_key_id = {e.id: self.identities[id(e)] for e in config.keys}

    def authenticate(self, ctx: RequestContext, now: float) -> Identity | None:
        presented = read_header_credential(ctx, self.location, self.max_key_bytes)
        if presented is None:
            return None
        raw = presented.encode()
        entry = self._match(self.sha256, hashlib.sha256(raw).hexdigest())
        if entry is None and self.sha512:
            entry = self._match(self.sha512, hashlib.sha512(raw).hexdigest())
        if entry is None:
            raise InvalidCredential("unknown API key")
        return self.identities[id(entry)]

    def _identity(self, entry: ApiKeyEntry) -> Identity:
        return Identity(
            kind=KIND,
            subject=entry.subject,
            source=self.name,
            scopes=frozenset(entry.scopes),
            claims=MappingProxyType({"roles": list(entry.roles), ID_CLAIM: entry.id}),
            tenant=entry.metadata.get("tenant", ""),
            plan=entry.metadata.get("plan", ""),
        )

    @staticmethod
    def _match(index: dict[str, ApiKeyEntry], digest: str) -> ApiKeyEntry | None:
        entry = index.get(digest)
        if entry is None:
            return None
        stored = (entry.sha256 or entry.sha512 or "").lower()
        return entry if hmac.compare_digest(stored, digest) else None


def build(ctx: SourceContext, config: ApiKeySource) -> ApiKeyIdentitySource:
    return ApiKeyIdentitySource(ctx.name, config, ctx.max_token_bytes)


def given_identity(source: ApiKeyIdentitySource, given: GivenIdentity) -> Identity:
    """A policy test's caller: the identity of the key with this id."""
    if given.key is None or given.claims or given.spiffe is not None:
        raise ValueError("an API key identity is given as 'key: <the key's id>'")
    identity = source.by_key_id.get(given.key)
    if identity is None:
        raise ValueError(f"no key with id '{given.key}' in identity source '{source.name}'")
    return identity


def credential_headers(config: ApiKeySource) -> tuple[str, ...]:
    return (config.header,)
