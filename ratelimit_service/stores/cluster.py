"""Redis Cluster: the store for limits shared by many replicas and machines.

Placement choice: keys keep the reference's names, without hash tags, so each
descriptor's counter hashes to its own slot and hot limits spread over the masters.
That is correct because on the cluster every command touches exactly one key (no
multi-key script, unlike the single-Redis store): the cluster pipeline groups one
request's commands by node and sends the groups concurrently, so a request costs one
round trip per node it touches (in parallel), never a cross-slot command. Each
counter is atomic on its own; a request's counters are not one transaction, exactly
as in the reference. MOVED/ASK redirections are followed by the
client, which also refreshes its slot map after a failover.
"""

from __future__ import annotations

from redis.asyncio.cluster import ClusterNode, RedisCluster

from ratelimit_service.stores.redis import RedisOptions, RedisStore, retry_policy


def connect_cluster(nodes: list[tuple[str, int]], options: RedisOptions) -> RedisCluster:
    """A cluster client from seed nodes; it discovers the others (lazy: on first use)."""
    client = RedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in nodes],
        socket_timeout=options.timeout,
        socket_connect_timeout=options.timeout,
        max_connections=options.pool_size,
        username=options.username,
        password=options.password,
        ssl=options.tls,
        retry=retry_policy(),
    )
    return client


class ClusterStore(RedisStore):
    """RedisStore over a RedisCluster client (same commands, per-node pipelines)."""

    def __init__(self, client: RedisCluster, *, local_cache_bytes: int = 0) -> None:
        super().__init__(client, local_cache_bytes=local_cache_bytes, single_command=False)
