"""tollgate.eager: inline when a coroutine does not wait, a task from where it waits."""

from __future__ import annotations

import asyncio

import pytest

from tollgate.eager import start


async def quick(value: int) -> int:
    return value + 1


async def waits(gate: asyncio.Future[int], log: list[str]) -> int:
    log.append("before")
    value = await gate
    log.append("after")
    await asyncio.sleep(0)
    return value * 2


def test_a_coroutine_that_never_waits_is_finished_inline() -> None:
    async def main() -> None:
        assert start(quick(1)) == 2

    asyncio.run(main())


def test_a_waiting_coroutine_continues_in_a_task_from_where_it_waited() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        gate: asyncio.Future[int] = loop.create_future()
        log: list[str] = []
        task = start(waits(gate, log))
        assert isinstance(task, asyncio.Task)
        assert log == ["before"]  # the first step ran inline, exactly once
        gate.set_result(21)
        assert await task == 42
        assert log == ["before", "after"]

    asyncio.run(main())


def test_cancelling_the_task_cancels_the_coroutine_where_it_waits() -> None:
    async def main() -> None:
        gate: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        cleaned: list[bool] = []

        async def guarded() -> int:
            try:
                return await gate
            except asyncio.CancelledError:
                cleaned.append(True)
                raise

        task = start(guarded())
        assert isinstance(task, asyncio.Task)
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert cleaned == [True]

    asyncio.run(main())


def test_an_error_after_waiting_reaches_the_task_and_one_before_reaches_the_caller() -> None:
    async def fails_later(gate: asyncio.Future[int]) -> int:
        await gate
        raise ValueError("later")

    async def fails_now() -> int:
        raise KeyError("now")

    async def main() -> None:
        gate: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        task = start(fails_later(gate))
        assert isinstance(task, asyncio.Task)
        gate.set_result(1)
        with pytest.raises(ValueError, match="later"):
            await task
        with pytest.raises(KeyError):
            start(fails_now())

    asyncio.run(main())
