"""Coalesce the Redis commands of concurrent requests into shared pipelines.

Every request's commands still travel in exactly one pipeline (one round trip per
request, usually shared with others), but the client's per-pipeline cost (pool
checkout, timeouts, packing, a write and a read loop) is paid once per batch instead
of once per request. This is the reference's implicit pipelining
(REDIS_PIPELINE_WINDOW) without a timer: at most `max_in_flight` pipelines are
outstanding; requests arriving meanwhile wait and leave together in the next one
as soon as a pipeline returns. An idle service sends at once (no added latency); a
busy one adds at most one Redis round trip of queueing and gains large batches.
(grpc.aio hands each RPC its own loop turn, so batching per loop turn alone would
leave every batch at one request.)
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from ratelimit_service.stores import StoreUnavailable

Command = tuple[Any, ...]
_Waiter = tuple[Sequence[Command], "asyncio.Future[list[Any]]"]


class PipelineBatcher:
    """Runs command lists through `client.pipeline()`, many requests per pipeline."""

    def __init__(self, client: Any, *, max_commands: int = 1024, max_in_flight: int = 2) -> None:
        self.client = client
        self.max_commands = max_commands
        self.max_in_flight = max_in_flight
        self.pipelines_sent = 0
        self._in_flight = 0
        self._waiting: list[_Waiter] = []
        self._size = 0
        self._scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()

    async def execute(self, commands: Sequence[Command]) -> list[Any]:
        """Results (or per-command exceptions) for `commands`, in order.

        Raises StoreUnavailable when the pipeline as a whole fails (connection down).
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[Any]] = loop.create_future()
        self._waiting.append((commands, future))
        self._size += len(commands)
        if self._size >= self.max_commands:
            self._flush(force=True)
        elif not self._scheduled and self._in_flight < self.max_in_flight:
            self._scheduled = True
            loop.call_soon(self._flush)
        return await future

    def _flush(self, *, force: bool = False) -> None:
        self._scheduled = False
        if not self._waiting or (self._in_flight >= self.max_in_flight and not force):
            return  # a returning pipeline flushes what waits
        batch, self._waiting, self._size = self._waiting, [], 0
        self._in_flight += 1
        task = asyncio.get_running_loop().create_task(self._send(batch))
        self._tasks.add(task)
        task.add_done_callback(self._sent)

    def _sent(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._in_flight -= 1
        if self._waiting and not self._scheduled:
            self._flush()

    async def _send(self, batch: list[_Waiter]) -> None:
        pipe = self.client.pipeline(transaction=False)
        for commands, _ in batch:
            for command in commands:
                pipe.execute_command(*command)
        self.pipelines_sent += 1
        try:
            results: list[Any] = await pipe.execute(raise_on_error=False)
        except Exception as exc:  # the connection or cluster as a whole failed
            error = StoreUnavailable(f"redis: {exc}")
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
            return
        position = 0
        for commands, future in batch:
            end = position + len(commands)
            if not future.done():  # a cancelled request (client gone) is skipped
                future.set_result(results[position:end])
            position = end

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for _, future in self._waiting:
            if not future.done():
                future.cancel()
        self._waiting = []
