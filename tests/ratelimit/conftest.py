from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from ratelimit_service.stores import CounterStore
from ratelimit_service.stores.cluster import connect_cluster
from ratelimit_service.stores.redis import RedisOptions, RedisStore, connect_single
from tests.kits import ratelimit_kit as support
from tests.kits.redis_procs import RedisCluster, RedisProcess, cli, start_cluster

EVERY_STORE = "tests.ratelimit.test_conformance"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """The conformance suite, unchanged, once per store: memory, Redis, Redis Cluster."""
    if metafunc.module.__name__ == EVERY_STORE:
        metafunc.fixturenames.append("store_kind")
        metafunc.parametrize(
            "store_kind",
            ["memory", pytest.param("redis", marks=pytest.mark.integration),
             pytest.param("cluster", marks=pytest.mark.integration)],
        )


@pytest.fixture(autouse=True)
def _count_in_the_parametrised_store(request: pytest.FixtureRequest) -> Iterator[None]:
    """Makes limiters built without a store count in the conformance test's store."""
    callspec = getattr(request.node, "callspec", None)
    kind = callspec.params.get("store_kind") if callspec is not None else None
    if kind is None or kind == "memory":
        yield
        return
    factory: Callable[[], CounterStore]
    if kind == "redis":
        server: RedisProcess = request.getfixturevalue("redis_server")

        def factory() -> CounterStore:
            return RedisStore(connect_single(server.url, RedisOptions(timeout=5)))
    else:
        cluster: RedisCluster = request.getfixturevalue("redis_cluster")
        for node in cluster.nodes:  # every test starts from empty counters
            cli(node.port, "FLUSHALL")
        nodes = [("127.0.0.1", n.port) for n in cluster.nodes]

        def factory() -> CounterStore:
            return RedisStore(connect_cluster(nodes, RedisOptions(timeout=5)))
    previous = support.default_store
    support.default_store = factory
    try:
        yield
    finally:
        support.default_store = previous


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    """A real 3-master Redis Cluster, shared by the cluster tests."""
    cluster = start_cluster(tmp_path_factory.mktemp("cluster"))
    try:
        yield cluster
    finally:
        cluster.stop()
