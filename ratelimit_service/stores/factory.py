"""One counter store from one set of settings: the engine's entry point for stores.

Both doors that count hits build their store here: ratelimit-service from its flags
(and the reference's REDIS_* variables), authz-service for the rate limits it decides
inside the Check. Clients connect lazily, on first use.
"""

from __future__ import annotations

from dataclasses import dataclass

from ratelimit_service.stores import CounterStore
from ratelimit_service.stores.memory import MemoryStore
from ratelimit_service.stores.target import StoreTarget, parse_target


@dataclass(frozen=True, slots=True)
class StoreSettings:
    """Where counters live and how to reach them (read once, at start)."""

    url: str = ""  # empty: in memory; see stores.target for the accepted forms
    redis_type: str = "single"
    socket_type: str = "tcp"
    auth: str = ""
    tls: bool = False
    timeout: float = 1.0
    pool_size: int = 64
    local_cache_bytes: int = 1_048_576
    memory_max_keys: int = 1_000_000
    stop_when_over: bool = False  # STOP_CACHE_KEY_INCREMENT_WHEN_OVERLIMIT


def build_store(settings: StoreSettings) -> tuple[CounterStore, StoreTarget]:
    """The store the settings select; TargetError when the URL cannot be used."""
    target = parse_target(
        settings.url, redis_type=settings.redis_type, socket_type=settings.socket_type,
        auth=settings.auth, tls=settings.tls,
    )
    stop = settings.stop_when_over
    if target.kind == "memory":
        return MemoryStore(settings.memory_max_keys, stop_when_over=stop), target
    from ratelimit_service.stores.redis import (  # noqa: PLC0415 - memory users skip redis
        RedisOptions,
        RedisStore,
        connect_sentinel,
        connect_single,
    )

    options = RedisOptions(
        timeout=settings.timeout, pool_size=settings.pool_size,
        username=target.username, password=target.password, tls=target.tls,
    )
    cache = settings.local_cache_bytes
    if target.kind == "cluster":
        from ratelimit_service.stores.cluster import (  # noqa: PLC0415
            ClusterStore,
            connect_cluster,
        )

        router = connect_cluster(target.nodes, options)
        return ClusterStore(router, local_cache_bytes=cache, stop_when_over=stop), target
    if target.kind == "sentinel":
        client, sentinels = connect_sentinel(target.nodes, target.master, options)
        store = RedisStore(client, local_cache_bytes=cache, also_close=sentinels,
                           stop_when_over=stop)
        return store, target
    connection = connect_single(target.url, options)
    return RedisStore(connection, local_cache_bytes=cache, stop_when_over=stop), target
