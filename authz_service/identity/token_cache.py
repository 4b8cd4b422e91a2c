"""Verified-token cache: a bounded LRU keyed by a hash of the token.

An entry never outlives the token's `exp` (plus skew) and is tied to the key set
generation that verified it, so a key rotation re-verifies cached tokens.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass

from authz_service.identity.token_binding import TokenBinding
from authz_service.models import Identity


@dataclass(frozen=True, slots=True)
class CachedIdentity:
    identity: Identity
    valid_until: float
    keys_generation: int
    binding: TokenBinding | None = None  # None: a bearer token


class TokenCache:
    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple[str, bytes], CachedIdentity] = OrderedDict()
        self.hits = 0
        self.misses = 0

    @staticmethod
    def digest(token: str) -> bytes:
        return hashlib.sha256(token.encode()).digest()

    def get(
        self, source: str, digest: bytes, now: float, keys_generation: int
    ) -> CachedIdentity | None:
        key = (source, digest)
        entry = self._entries.get(key)
        if entry is None:
            self.misses += 1
            return None
        if now >= entry.valid_until or entry.keys_generation != keys_generation:
            del self._entries[key]
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return entry

    def put(
        self, source: str, digest: bytes, entry: CachedIdentity
    ) -> None:
        if self.max_entries <= 0:
            return
        key = (source, digest)
        self._entries[key] = entry
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)
