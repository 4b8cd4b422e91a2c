"""One counter store from one set of settings: the engine's entry point for stores.

Both doors that count hits build their store here: ratelimit-service from its flags
(and the reference's REDIS_* variables), authz-service for the rate limits it decides
inside the Check. Clients connect lazily, on first use.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ratelimit_service.stores import CounterStore
from ratelimit_service.stores.memory import DEFAULT_MAX_BYTES, MemoryStore
from ratelimit_service.stores.target import StoreTarget, TargetError, parse_target
from tollgate.settings import SettingsError, duration


@dataclass(frozen=True, slots=True)
class StoreSettings:
    """Where counters live and how to reach them (read once, at start)."""

    url: str = ""  # empty: in memory; see stores.target for the accepted forms
    redis_type: str = "single"
    socket_type: str = "tcp"
    auth: str = ""  # password or user:password (see username)
    tls: bool = False
    timeout: float = 1.0
    local_cache_bytes: int = 1_048_576
    memory_max_keys: int = 1_000_000
    stop_when_over: bool = False  # STOP_CACHE_KEY_INCREMENT_WHEN_OVERLIMIT
    memory_max_bytes: int = DEFAULT_MAX_BYTES
    tls_ca_file: str = ""  # rediss://: the CA that signed the server's certificate
    username: str = ""  # set: `auth` is the whole password, even with ':' in it
    pipeline_window: float = 0.0  # seconds a busy store waits for requests to share a call
    pipeline_limit: int = 512  # counters per script call at most
    lease_hits: int = 0  # > 0: fixed-window hits reserved in blocks (stores/leases.py)


def pipeline_window(text: str, prefix: str) -> float:
    """`--<prefix>redis-pipeline-window` in seconds; SettingsError naming the flag."""
    try:
        return duration(text)
    except ValueError as exc:
        raise SettingsError(f"--{prefix}redis-pipeline-window: {exc}") from None


def check_store(settings: StoreSettings, prefix: str) -> StoreSettings:
    """The settings, if a store can be built from them (only the URL's form is checked:
    clients connect on first use); else SettingsError naming the flag at fault, whose
    names are `--<prefix>redis-url` and so on (prefix '' for ratelimit-service,
    'limits-' for authz-service's rate limits)."""
    rules = (
        (settings.timeout > 0, "redis-timeout", settings.timeout, "must be above 0"),
        (settings.pipeline_window <= 1.0, "redis-pipeline-window", settings.pipeline_window,
         "at most 1 s"),
        (settings.pipeline_limit >= 0, "redis-pipeline-limit", settings.pipeline_limit,
         "at least 0"),
        (settings.memory_max_keys >= 1, "memory-max-keys", settings.memory_max_keys,
         "at least 1"),
        (settings.memory_max_bytes >= 1, "memory-max-bytes", settings.memory_max_bytes,
         "at least 1"),
        (settings.local_cache_bytes >= 0, "local-cache-size-bytes",
         settings.local_cache_bytes, "at least 0"),
        (0 <= settings.lease_hits <= 1_000_000, "redis-lease-hits", settings.lease_hits,
         "between 0 (off) and 1000000"),
    )
    for ok, name, value, rule in rules:
        if not ok:
            raise SettingsError(f"--{prefix}{name} {value}: {rule}")
    if settings.tls_ca_file and not Path(settings.tls_ca_file).is_file():
        raise SettingsError(f"--{prefix}redis-tls-ca-file {settings.tls_ca_file}: no such file")
    try:
        target = parse_target(settings.url, redis_type=settings.redis_type,
                              socket_type=settings.socket_type, auth=settings.auth,
                              tls=settings.tls, username=settings.username)
    except TargetError as exc:  # its message never shows a password
        raise SettingsError(f"--{prefix}redis-url: {exc}") from None
    if settings.lease_hits and target.kind == "memory":
        raise SettingsError(f"--{prefix}redis-lease-hits needs a Redis store "
                            f"(--{prefix}redis-url): in memory every hit is counted locally")
    if settings.lease_hits and settings.stop_when_over:
        raise SettingsError(f"--{prefix}redis-lease-hits cannot be used with "
                            "STOP_CACHE_KEY_INCREMENT_WHEN_OVERLIMIT: a lease is charged "
                            "before the request's other counters are known")
    return settings


def build_store(settings: StoreSettings) -> tuple[CounterStore, StoreTarget]:
    """The store the settings select; TargetError when the URL cannot be used."""
    target = parse_target(
        settings.url, redis_type=settings.redis_type, socket_type=settings.socket_type,
        auth=settings.auth, tls=settings.tls, username=settings.username,
    )
    stop = settings.stop_when_over
    if target.kind == "memory":
        memory = MemoryStore(settings.memory_max_keys, stop_when_over=stop,
                             max_bytes=settings.memory_max_bytes)
        return memory, target
    from ratelimit_service.stores.link import RedisLink  # noqa: PLC0415 - memory users skip redis
    from ratelimit_service.stores.redis import (  # noqa: PLC0415
        RedisOptions,
        RedisStore,
        connect_single,
    )

    options = RedisOptions(
        timeout=settings.timeout, username=target.username, password=target.password,
        tls=target.tls, tls_ca_file=settings.tls_ca_file,
    )
    link: RedisLink
    if target.kind == "cluster":
        from ratelimit_service.stores.cluster import connect_cluster  # noqa: PLC0415

        link = connect_cluster(target.nodes, options)
    elif target.kind == "sentinel":
        from ratelimit_service.stores.sentinel import connect_sentinel  # noqa: PLC0415

        link = connect_sentinel(target.nodes, target.master, options)
    else:
        link = connect_single(target.url, options)
    store = RedisStore(link, local_cache_bytes=settings.local_cache_bytes, stop_when_over=stop,
                       pipeline_window=settings.pipeline_window,
                       pipeline_limit=settings.pipeline_limit or 512)
    if settings.lease_hits:
        from ratelimit_service.stores.leases import LeasedStore  # noqa: PLC0415

        return LeasedStore(store, settings.lease_hits), target
    return store, target
