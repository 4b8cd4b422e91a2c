"""Where spent DPoP proofs are remembered, so a proof's `jti` is accepted once (RFC 9449 §11.1).

The only I/O of DPoP: the pipeline asks `first_use` after the pure verification
passed. In memory for one replica; in Redis (`SET key 1 NX PX ttl`, one atomic
command) when replicas share the work, since a proof refused by one replica must be
refused by all. A store that cannot answer refuses the proof (503): never an allow
on an unchecked jti.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Protocol

from ratelimit_service.stores import StoreUnavailable
from ratelimit_service.stores.resp import RespConnection
from ratelimit_service.stores.target import parse_redis_url

DEFAULT_MAX_ENTRIES = 1_000_000


class ReplayStoreUnavailable(Exception):
    """The store could not say whether the proof is new."""


class ReplayStore(Protocol):
    async def first_use(self, key: str, expires: float, now: float) -> bool:
        """Record the proof; False when it was recorded before and has not expired."""
        ...

    async def close(self) -> None: ...


class MemoryReplayStore:
    """One replica's spent proofs, bounded. Entries are kept in arrival order; every
    proof lives as long (the window), so the oldest expire first and are dropped as
    new ones come. When the bound is reached with nothing expired, new proofs are
    refused (ReplayStoreUnavailable) rather than forgetting live ones."""

    def __init__(self, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        self.max_entries = max_entries
        self._seen: OrderedDict[str, float] = OrderedDict()

    async def first_use(self, key: str, expires: float, now: float) -> bool:
        seen = self._seen
        while seen:
            oldest, until = next(iter(seen.items()))
            if until > now:
                break
            del seen[oldest]
        recorded = seen.get(key)
        if recorded is not None and recorded > now:
            return False
        if len(seen) >= self.max_entries:
            raise ReplayStoreUnavailable("DPoP replay store full")
        seen[key] = expires
        seen.move_to_end(key)  # an expired entry of the same key is live again: last in line
        return True

    def __len__(self) -> int:
        return len(self._seen)

    async def close(self) -> None:
        return None


class RedisReplayStore:
    """Spent proofs in one Redis (redis://, rediss://, unix://), shared by replicas."""

    def __init__(self, url: str, *, timeout: float = 0.25, key_prefix: str = "",
                 tls_ca_file: str = "") -> None:
        self.connection = RespConnection(parse_redis_url(url, tls_ca_file=tls_ca_file),
                                         timeout=timeout)
        self.key_prefix = key_prefix

    async def first_use(self, key: str, expires: float, now: float) -> bool:
        ttl_ms = max(1, int((expires - now) * 1000))
        try:
            reply = await self.connection.call(
                "SET", f"{self.key_prefix}dpop:{key}", "1", "NX", "PX", ttl_ms)
        except StoreUnavailable as exc:
            raise ReplayStoreUnavailable(str(exc)) from None
        if isinstance(reply, Exception):  # hiredis hands Redis' error replies back as values
            raise ReplayStoreUnavailable(f"redis: {reply}")
        return reply is not None

    async def close(self) -> None:
        await self.connection.aclose()
