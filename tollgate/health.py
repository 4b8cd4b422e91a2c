"""Readiness and liveness, in one place every door reads (gRPC health, HTTP /ready).

Live: the process runs and answers; only a restart would help when it does not.
Ready: it can decide requests as configured. Whatever stops it being ready (an
identity source that never obtained usable keys, a required store that is
down) holds a named blocker here until it is resolved. Doors read `ready` and
`blockers()`, or subscribe to changes; nothing here does I/O.

gRPC health names (tollgate.server.GrpcApp): `""` (the whole server) and each
service's full name report readiness; `liveness` reports liveness. All of them
turn NOT_SERVING when the process drains on SIGTERM.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

LIVENESS_SERVICE = "liveness"


class Readiness:
    """Named reasons this process is not ready; ready when there are none."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._blockers: dict[str, str] = {}
        self._listeners: list[Callable[[bool], None]] = []

    @property
    def ready(self) -> bool:
        with self._lock:
            return not self._blockers

    def blockers(self) -> dict[str, str]:
        """name -> why, e.g. {"keys:corp-idp": "no usable signing keys yet"}."""
        with self._lock:
            return dict(self._blockers)

    def block(self, name: str, reason: str) -> None:
        self._change(lambda b: b.__setitem__(name, reason))

    def clear(self, name: str) -> None:
        self._change(lambda b: b.pop(name, None))

    def replace(self, prefix: str, blockers: dict[str, str]) -> None:
        """Set every blocker whose name starts with prefix to exactly these."""

        def update(current: dict[str, str]) -> None:
            for name in [n for n in current if n.startswith(prefix)]:
                del current[name]
            current.update(blockers)

        self._change(update)

    def subscribe(self, listener: Callable[[bool], None]) -> None:
        """listener(ready) after every change of `ready` (on the changing thread)."""
        with self._lock:
            self._listeners.append(listener)

    def _change(self, update: Callable[[dict[str, str]], object]) -> None:
        with self._lock:
            before = not self._blockers
            update(self._blockers)
            after = not self._blockers
            listeners = list(self._listeners) if before != after else []
        for listener in listeners:
            listener(after)
