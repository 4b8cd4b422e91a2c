"""Test helpers: an injected clock, request builders, an in-process gRPC server."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass

import grpc
from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc

from ratelimit_service.config import build_domain
from ratelimit_service.decision import DecisionSettings
from ratelimit_service.grpc_service import service_spec
from ratelimit_service.limiter import FailureMode, RateLimiter
from ratelimit_service.rules import RuleSet
from ratelimit_service.stores import CounterStore
from ratelimit_service.stores.memory import MemoryStore
from tollgate.config import parse_config_text
from tollgate.reload import ConfigHolder
from tollgate.server import GrpcApp

OK = rls_pb2.RateLimitResponse.OK
OVER = rls_pb2.RateLimitResponse.OVER_LIMIT

# A moment well inside a minute, hour and day window (2026-01-01T00:00:10Z).
T0 = 1_767_225_610.0


@dataclass
class Clock:
    """An injected clock the test moves by hand."""

    now: float = T0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def rules_from(*texts: str) -> RuleSet:
    trees = {}
    for i, text in enumerate(texts):
        tree = parse_config_text(text, f"test{i}.yaml", build_domain)
        trees[tree.domain] = tree
    return RuleSet(trees)


def descriptor(
    *entries: tuple[str, str],
    hits: int | None = None,
    override: tuple[int, int] | None = None,
) -> ratelimit_pb2.RateLimitDescriptor:
    d = ratelimit_pb2.RateLimitDescriptor(
        entries=[ratelimit_pb2.RateLimitDescriptor.Entry(key=k, value=v) for k, v in entries]
    )
    if hits is not None:
        d.hits_addend.value = hits
    if override is not None:
        d.limit.requests_per_unit, d.limit.unit = override
    return d


def request(
    domain: str, *descriptors: ratelimit_pb2.RateLimitDescriptor, hits: int = 0
) -> rls_pb2.RateLimitRequest:
    return rls_pb2.RateLimitRequest(domain=domain, descriptors=descriptors, hits_addend=hits)


# The store a limiter gets when a test names none (tests/ratelimit/conftest.py runs the
# conformance suite once per store kind by setting it). Stores made here are closed
# when `serve` ends.
default_store: Callable[[], CounterStore] = MemoryStore
_made_here: list[CounterStore] = []


def make_limiter(
    rules: RuleSet,
    *,
    store: CounterStore | None = None,
    clock: Clock | None = None,
    settings: DecisionSettings | None = None,
    failure_mode: FailureMode = FailureMode.OPEN,
) -> RateLimiter:
    if store is None:
        store = default_store()
        _made_here.append(store)
    return RateLimiter(
        ConfigHolder(rules),
        store,
        settings or DecisionSettings(),
        failure_mode=failure_mode,
        clock=clock or Clock(),
    )


@dataclass
class Served:
    address: str
    stub: rls_pb2_grpc.RateLimitServiceStub
    channel: grpc.aio.Channel

    async def call(self, req: rls_pb2.RateLimitRequest) -> rls_pb2.RateLimitResponse:
        response: rls_pb2.RateLimitResponse = await self.stub.ShouldRateLimit(req, timeout=10)
        return response

    async def codes(self, req: rls_pb2.RateLimitRequest, times: int) -> list[int]:
        return [(await self.call(req)).overall_code for _ in range(times)]


@contextlib.asynccontextmanager
async def serve(limiters: Sequence[RateLimiter] | RateLimiter) -> AsyncIterator[Served]:
    """Serve one limiter on 127.0.0.1:0 with the real GrpcApp; yield a connected stub."""
    limiter = limiters if isinstance(limiters, RateLimiter) else limiters[0]
    app = GrpcApp("127.0.0.1:0", [service_spec(limiter)])
    address = await app.start()
    channel = grpc.aio.insecure_channel(address)
    try:
        yield Served(address, rls_pb2_grpc.RateLimitServiceStub(channel), channel)
    finally:
        await channel.close()
        await app.drain(0)
        if limiter.store in _made_here:
            _made_here.remove(limiter.store)
            await limiter.store.close()


# What the service says of a config directory with no *.yaml file in it.
EMPTY_DIRECTORY = ("no *.yaml or *.yml file in this directory: every rate limit would be off "
                   "(--allow-empty-config to serve with no limits)")
