"""Run a coroutine at once, in the caller's turn of the event loop; a task only if it waits.

A plain-HTTP door answers most checks without any I/O (a cached token, counts in
memory). Scheduling each one as a task costs a loop iteration and ~2 µs more
(measured: 0.47 µs to drive a coroutine that does not suspend, 1.9 µs through
create_task, uvloop). `start` drives the coroutine's first step inline: if it
finishes, the result is returned; if it suspends on a future, a task takes over
from exactly that point (the future it waits on is handed to the task unchanged).
This is what Python 3.12 calls an eager task factory, for one call site.

The first step runs outside any task, so `asyncio.current_task()` is None there:
code run this way must not use `asyncio.timeout()` (use `asyncio.wait_for`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Generator
from typing import Any, TypeVar

T = TypeVar("T")


def start(coro: Coroutine[Any, Any, T]) -> T | asyncio.Task[T]:
    """The coroutine's result if it completes without suspending, else the task
    that carries it on (exceptions of the first step propagate to the caller)."""
    try:
        waiting = coro.send(None)
    except StopIteration as done:
        result: T = done.value
        return result
    return asyncio.get_running_loop().create_task(_resume(coro, waiting))


async def _resume(coro: Coroutine[Any, Any, T], waiting: Any) -> T:
    result: T = await _Continue(coro, waiting)
    return result


class _Continue:
    """Awaitable that first yields what the coroutine was waiting on, then delegates
    to it (sends, throws) until it returns: `yield from` picked up mid-way."""

    __slots__ = ("coro", "waiting")

    def __init__(self, coro: Coroutine[Any, Any, Any], waiting: Any) -> None:
        self.coro = coro
        self.waiting = waiting

    def __await__(self) -> Generator[Any, None, Any]:
        waiting = self.waiting
        while True:
            try:
                yield waiting
            except BaseException as exc:  # cancellation (or any throw) goes to the coroutine
                try:
                    waiting = self.coro.throw(exc)
                except StopIteration as done:
                    return done.value
            else:
                try:
                    waiting = self.coro.send(None)
                except StopIteration as done:
                    return done.value
