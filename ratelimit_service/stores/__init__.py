"""Counter stores: where hits are counted (memory, Redis, Sentinel, Redis Cluster)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from ratelimit_service.models import CounterOp, Usage


class StoreUnavailable(Exception):
    """The store could not be reached or answered with an error; no decision was made."""


class CounterStore(Protocol):
    """Applies all counter operations of one request; one Usage per op, in order.

    A counter that cannot be counted comes back as a Usage with `error` set (the
    others are still answered); raising StoreUnavailable fails the whole request.
    A store that can count without I/O may also offer `apply_now(ops, now)`, the same
    call made synchronously: callers that find it skip a coroutine per request. It
    returns None, having changed nothing, when it cannot answer without I/O this time
    (a leased store whose lease ran out): the caller awaits `apply` then.
    """

    async def apply(self, ops: Sequence[CounterOp], now: float) -> list[Usage]: ...

    async def close(self) -> None: ...


class InspectableStore(CounterStore, Protocol):
    """A store the admin API can read and reset."""

    async def peek(self, ops: Sequence[CounterOp], now: float) -> list[Usage]:
        """Each counter's usage with its op's hits added hypothetically; nothing written."""
        ...

    async def delete(self, keys: Sequence[str]) -> int:
        """Forget these keys; how many existed."""
        ...


__all__ = ["CounterStore", "InspectableStore", "StoreUnavailable"]
