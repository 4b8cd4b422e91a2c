"""A limit stage counted in process: what it keeps between requests never mixes counts."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from types import MappingProxyType

from authz_service.limits.actions import LimitInput
from authz_service.limits.compiled import CompiledLimits, compile_limits
from authz_service.limits.config import RateLimits
from authz_service.limits.stage import LimitCounter
from authz_service.models import Identity, RequestContext
from ratelimit_service.models import CounterOp, Usage
from ratelimit_service.stores.memory import MemoryStore

RULES = """
domain: api
descriptors:
  - key: subject
    rate_limit: {unit: minute, requests_per_unit: 5}
"""
T0 = 1_700_000_040.0  # the start of a minute


def compiled(tmp_path: Path) -> CompiledLimits:
    (tmp_path / "rules.yaml").write_text(RULES)
    config = RateLimits.model_validate({
        "rules": "rules.yaml", "domain": "api", "headers": "reference",
        "sets": [{"name": "per-subject", "stage": "after_authz",
                  "descriptors": [{"actions": [{"subject": {}}]}],
                  "store_failure_mode": "closed"}]})
    return compile_limits(config, ["orders"], tmp_path)


def who(subject: str) -> Identity:
    return Identity("jwt", subject, "idp")


REQUEST = RequestContext("GET", "/orders/1", headers=MappingProxyType({}))


def remaining(counter: LimitCounter, limits: CompiledLimits, identity: Identity) -> int:
    result = counter.run_now(limits, limits.for_route("orders").after,
                             LimitInput(REQUEST, "orders", identity))
    assert result is not None
    return result.statuses[0].limit_remaining


def test_each_identity_has_its_own_count_however_the_last_one_is_kept(tmp_path: Path) -> None:
    limits = compiled(tmp_path)
    counter = LimitCounter(MemoryStore(), clock=lambda: T0 + 1)
    alice, bob = who("alice"), who("bob")
    assert [remaining(counter, limits, alice) for _ in range(2)] == [4, 3]
    assert remaining(counter, limits, bob) == 4  # never alice's counter
    assert remaining(counter, limits, alice) == 2
    # Another Identity object for the same subject: the same counter, planned again.
    assert remaining(counter, limits, who("alice")) == 1


def test_a_new_window_counts_afresh_with_the_plan_kept(tmp_path: Path) -> None:
    limits = compiled(tmp_path)
    now = [T0 + 1]
    counter = LimitCounter(MemoryStore(), clock=lambda: now[0])
    alice = who("alice")
    assert [remaining(counter, limits, alice) for _ in range(3)] == [4, 3, 2]
    now[0] = T0 + 60
    assert remaining(counter, limits, alice) == 4


class AwaitedStore:
    """A store with I/O (no apply_now): counted by awaiting `apply`."""

    def __init__(self) -> None:
        self.memory = MemoryStore()

    async def apply(self, ops: Sequence[CounterOp], now: float) -> list[Usage]:
        await asyncio.sleep(0)
        return self.memory.apply_now(ops, now)

    async def close(self) -> None:
        pass


def test_a_store_with_io_is_awaited_and_counts_the_same(tmp_path: Path) -> None:
    limits = compiled(tmp_path)
    counter = LimitCounter(AwaitedStore(), clock=lambda: T0 + 1)
    sets = limits.for_route("orders").after
    inp = LimitInput(REQUEST, "orders", who("alice"))
    assert counter.run_now(limits, sets, inp) is None

    async def twice() -> list[int]:
        return [(await counter.run(limits, sets, inp)).statuses[0].limit_remaining
                for _ in range(2)]

    assert asyncio.run(twice()) == [4, 3]
