"""Counter stores: where hits are counted (memory, Redis, Redis Cluster)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from ratelimit_service.model import CounterOp, Usage


class StoreUnavailable(Exception):
    """The store could not be reached or answered with an error; no decision was made."""


class CounterStore(Protocol):
    """Applies all counter operations of one request; one Usage per op, in order."""

    async def apply(self, ops: Sequence[CounterOp], now: float) -> list[Usage]: ...

    async def close(self) -> None: ...


__all__ = ["CounterStore", "StoreUnavailable"]
