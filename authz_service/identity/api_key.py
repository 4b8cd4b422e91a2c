"""API keys, stored only as SHA-256/SHA-512 digests and compared in constant time.

The presented key is hashed and the digest looked up; the final comparison is
hmac.compare_digest. Looking up by digest leaks nothing useful: an attacker who
could steer the lookup would need SHA-256 preimages.
"""

from __future__ import annotations

import hashlib
import hmac
from types import MappingProxyType

from authz_service.config import ApiKeyEntry, ApiKeySource
from authz_service.identity.credentials import HeaderLocation, read_header_credential
from authz_service.identity.errors import InvalidCredential
from authz_service.models import Identity, IdentityKind, RequestContext


class ApiKeyIdentitySource:
    kind = IdentityKind.API_KEY

    def __init__(self, name: str, config: ApiKeySource, max_key_bytes: int) -> None:
        self.name = name
        self.location = HeaderLocation(config.header, config.prefix)
        self.max_key_bytes = max_key_bytes
        self.sha256 = {e.sha256.lower(): e for e in config.keys if e.sha256}
        self.sha512 = {e.sha512.lower(): e for e in config.keys if e.sha512}
        # One Identity per key, built once: what is derived from it (its Allow per
        # route, the bytes a door sends) is then built once too.
        self.identities = {id(e): self._identity(e) for e in config.keys}

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
            kind=IdentityKind.API_KEY,
            subject=entry.subject,
            source=self.name,
            scopes=frozenset(entry.scopes),
            claims=MappingProxyType({"roles": list(entry.roles), "key_id": entry.id}),
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
