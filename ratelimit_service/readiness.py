"""Readiness: gRPC health says SERVING only once the counter store has answered.

A misconfigured Redis (wrong password, closed port, a TLS certificate that does not
verify) used to start a service that answered SERVING and failed every call open.
Now readiness (tollgate.health, which gRPC health reports) starts blocked by `store`;
the store is probed (PING on every node) until it answers, and the reason it does
not is logged, once per change. After that, with
`--store-failure-mode closed` (calls fail while the store is down) health follows
the store; with `open` it stays SERVING through an outage, since answering is then
the operator's explicit choice (counted and logged by the limiter).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

from ratelimit_service.limiter import FailureMode
from ratelimit_service.stores import StoreUnavailable
from tollgate.health import Readiness

log = logging.getLogger("ratelimit_service")


class Probed(Protocol):
    async def ping(self) -> None:
        """Return when the store answers; StoreUnavailable with the reason otherwise."""
        ...


BLOCKER = "store"


class StoreReadiness:
    """Blocks readiness (the `store` blocker) from the store's answers to `ping`."""

    def __init__(
        self,
        store: Probed,
        readiness: Readiness,
        *,
        failure_mode: FailureMode,
        interval: float = 1.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.store = store
        self.readiness = readiness
        self.failure_mode = failure_mode
        self.interval = interval
        self.sleep = sleep
        self.ready = False
        self.answered_once = False
        self.last_error = ""

    def block_until_probed(self) -> None:
        """Not ready before the first answer (called before the server starts)."""
        self.readiness.block(BLOCKER, "the counter store has not answered yet")

    async def check(self) -> bool:
        """Probe once and set health; True when the store answered."""
        try:
            await self.store.ping()
        except StoreUnavailable as exc:
            error = str(exc)
        except Exception as exc:  # a probe must never kill readiness
            error = f"{type(exc).__name__}: {exc}"
        else:
            error = ""
        if not error:
            self.answered_once = True
            if not self.ready or self.last_error:
                log.info("counter store ready")
            self.last_error = ""
            self._set(ready=True)
            return True
        if error != self.last_error:
            log.error("counter store not ready", extra={"error": error})
            self.last_error = error
        self._set(ready=self.answered_once and self.failure_mode is FailureMode.OPEN,
                  reason=error)
        return False

    def _set(self, *, ready: bool, reason: str = "") -> None:
        self.ready = ready
        if ready:
            self.readiness.clear(BLOCKER)
        else:
            self.readiness.block(BLOCKER, reason or "the counter store has not answered yet")

    async def run(self) -> None:
        while True:
            await self.check()
            await self.sleep(self.interval)
