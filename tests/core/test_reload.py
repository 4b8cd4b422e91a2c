from __future__ import annotations

import asyncio
import contextlib
import os
import time
from pathlib import Path

import pytest

from tollgate.config import ConfigError, load_config_file
from tollgate.reload import ConfigHolder, ConfigWatcher


def build(data: object) -> str:
    if not isinstance(data, dict) or not isinstance(data.get("value"), str):
        from tollgate.config import LocatedError

        raise LocatedError(("value",), "must be a string")
    return data["value"]


def make_watcher(path: Path) -> tuple[ConfigHolder[str], ConfigWatcher[str]]:
    holder = ConfigHolder(load_config_file(path, build))
    return holder, ConfigWatcher(path, holder, lambda: load_config_file(path, build))


def test_in_place_edit_is_swapped(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("value: one\n")
    holder, watcher = make_watcher(path)
    path.write_text("value: two, longer\n")
    assert watcher.check() is True
    assert holder.current == "two, longer"
    assert holder.generation == 2
    assert watcher.check() is False


def test_invalid_edit_keeps_last_good(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("value: one\n")
    holder, watcher = make_watcher(path)
    path.write_text("value: [broken\n")
    assert watcher.check() is False
    assert holder.current == "one"
    assert isinstance(holder.last_error, ConfigError)
    assert holder.last_error.file == str(path)


def test_deleted_file_keeps_last_good(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("value: one\n")
    holder, watcher = make_watcher(path)
    path.unlink()
    assert watcher.check() is False
    assert holder.current == "one"


def test_kubernetes_configmap_symlink_swap(tmp_path: Path) -> None:
    # kubelet layout: c.yaml -> ..data/c.yaml, ..data -> ..<timestamp>/ swapped by rename.
    first = tmp_path / "..2026_01"
    first.mkdir()
    (first / "c.yaml").write_text("value: one\n")
    os.symlink(first.name, tmp_path / "..data")
    os.symlink("..data/c.yaml", tmp_path / "c.yaml")
    holder, watcher = make_watcher(tmp_path / "c.yaml")

    second = tmp_path / "..2026_02"
    second.mkdir()
    (second / "c.yaml").write_text("value: two\n")
    # Same size, and force the same mtime: only the resolved path differs.
    stamp = os.stat(first / "c.yaml").st_mtime_ns
    os.utime(second / "c.yaml", ns=(stamp, stamp))
    os.symlink(second.name, tmp_path / "..data_tmp")
    os.replace(tmp_path / "..data_tmp", tmp_path / "..data")
    assert watcher.check() is True
    assert holder.current == "two"


def test_watcher_loop_picks_up_change(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("value: one\n")
    holder, watcher = make_watcher(path)
    watcher.interval = 0.02

    async def scenario() -> None:
        task = asyncio.create_task(watcher.run())
        path.write_text("value: three\n")
        deadline = time.monotonic() + 5
        while holder.current != "three":
            if time.monotonic() > deadline:
                pytest.fail("watcher did not reload within 5 s")
            await asyncio.sleep(0.01)
        task.cancel()

    asyncio.run(scenario())


def test_a_slow_load_runs_off_the_event_loop(tmp_path: Path) -> None:
    # A load that burns CPU in Python for ~1 s (a large or hostile file): the loop
    # must keep turning meanwhile. On the loop itself every tick would wait ~1 s.
    path = tmp_path / "c.yaml"
    path.write_text("value: one\n")
    holder = ConfigHolder("one")

    def slow_load() -> str:
        deadline = time.thread_time() + 1.0
        while time.thread_time() < deadline:
            pass
        return load_config_file(path, build)

    watcher = ConfigWatcher(path, holder, slow_load, interval=0.01)

    async def scenario() -> float:
        task = asyncio.create_task(watcher.run())
        path.write_text("value: two, after a slow load\n")
        worst = 0.0
        last = time.monotonic()
        async with asyncio.timeout(30):
            while holder.current == "one":
                await asyncio.sleep(0.005)
                now = time.monotonic()
                worst, last = max(worst, now - last), now
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return worst

    worst = asyncio.run(scenario())
    assert holder.current == "two, after a slow load"
    assert worst < 0.5, f"the event loop stalled {worst:.3f} s during a reload"


def test_a_rejected_load_off_the_loop_keeps_the_last_good(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("value: one\n")
    holder, watcher = make_watcher(path)
    path.write_text("value: &x [*x]\n")

    async def scenario() -> bool:
        return await watcher.check_off_loop()

    assert asyncio.run(scenario()) is False
    assert holder.current == "one"
    assert str(holder.last_error) == f"{path}:1: alias '*x' refers to a node containing it"


def test_last_error_keeps_no_traceback(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("value: one\n")
    holder, watcher = make_watcher(path)
    path.write_text("value: [1, 2]\n")
    assert watcher.check() is False
    assert holder.last_error is not None
    assert holder.last_error.__traceback__ is None  # its frames held the whole document


def test_the_gc_pause_nests_and_restores(tmp_path: Path) -> None:
    import gc

    from tollgate.reload import cyclic_gc_paused

    assert gc.isenabled()
    with cyclic_gc_paused():
        with cyclic_gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()
