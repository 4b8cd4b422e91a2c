"""Atomic config snapshots and a file watcher that swaps them.

A reload builds the whole compiled snapshot first and swaps one reference, so a
request sees either the old config or the new one, never a mix. A file that fails
to load leaves the last good snapshot serving and logs the located error. The
running watcher reads, parses and compiles on a thread of its own (the YAML
loader's limits bound the cost) and swaps on the event loop: a hostile or merely
large file never stops the service answering.

The watcher polls a signature of the file (or directory) that changes on every
way a deploy replaces it: an in-place write (mtime, size), an atomic rename (inode)
and the Kubernetes ConfigMap swap, where `config.yaml -> ..data/config.yaml` and
`..data` is re-pointed to a new timestamped directory (the resolved path changes).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Generic, TypeVar

from tollgate.config import ConfigError
from tollgate.metrics import ConfigLoads

T = TypeVar("T")
log = logging.getLogger("tollgate.reload")

Signature = tuple[tuple[str, int, int, int], ...]

class _GcPause:
    """No cyclic GC pass while a config loads (reference counting goes on).

    Parsing a large document keeps ~500k objects alive at once, and every full
    collection walks all of them with the GIL held: 100-500 ms in which no other
    thread (the event loop's included) runs. The loader leaves no cyclic garbage
    behind (tollgate._yaml), so the pass can wait until the load is done.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._holders = 0
        self._was_enabled = True

    @contextlib.contextmanager
    def __call__(self) -> Iterator[None]:
        with self._lock:
            if self._holders == 0:
                self._was_enabled = gc.isenabled()
                gc.disable()
            self._holders += 1
        try:
            yield
        finally:
            with self._lock:
                self._holders -= 1
                if self._holders == 0 and self._was_enabled:
                    gc.enable()


cyclic_gc_paused = _GcPause()

# While a load runs, Python hands the GIL to another waiting thread only every
# switch interval (5 ms by default), and answering one RPC takes the event loop
# and gRPC's threads several turns: ~5 ms per turn was 30-90 ms per answer.
_RELOAD_SWITCH_INTERVAL = 0.0005


@contextlib.contextmanager
def _short_gil_turns() -> Iterator[None]:
    previous = sys.getswitchinterval()
    sys.setswitchinterval(min(previous, _RELOAD_SWITCH_INTERVAL))
    try:
        yield
    finally:
        sys.setswitchinterval(previous)


class ConfigHolder(Generic[T]):
    """The current config snapshot; readers take `.current` once per request."""

    def __init__(self, initial: T) -> None:
        self.current: T = initial
        self.generation = 1
        self.last_error: ConfigError | None = None

    def swap(self, new: T) -> None:
        self.current = new
        self.generation += 1
        self.last_error = None


def file_signature(path: Path) -> Signature:
    """What changes when the config at path is replaced by any deploy method."""
    targets = sorted(_config_files(path)) if path.is_dir() else [path]
    sig: list[tuple[str, int, int, int]] = []
    for target in targets:
        try:
            st = os.stat(target)
            sig.append((os.path.realpath(target), st.st_mtime_ns, st.st_size, st.st_ino))
        except OSError:
            sig.append((str(target), -1, -1, -1))
    return tuple(sig)


def _config_files(directory: Path) -> list[Path]:
    return [
        p
        for p in directory.iterdir()
        if p.suffix in (".yaml", ".yml") and not p.name.startswith(".")
    ]


class ConfigWatcher(Generic[T]):
    """Reloads `holder` from `load()` whenever the file signature changes."""

    def __init__(
        self,
        path: str | Path,
        holder: ConfigHolder[T],
        load: Callable[[], T],
        *,
        interval: float = 1.0,
        on_reload: Callable[[T], None] | None = None,
        also_watch: Callable[[T], Sequence[Path]] | None = None,
        loads: ConfigLoads | None = None,
    ) -> None:
        self.path = Path(path)
        self.holder = holder
        self.load = load
        self.interval = interval
        self.on_reload = on_reload
        # Files the current snapshot was built from besides `path` (e.g. rules it names).
        self.also_watch = also_watch
        self.loads = loads
        self._signature = self._current_signature()
        self._wake = asyncio.Event()
        self._executor: ThreadPoolExecutor | None = None

    def _current_signature(self) -> Signature:
        signature = file_signature(self.path)
        if self.also_watch is not None:
            for extra in self.also_watch(self.holder.current):
                signature += file_signature(extra)
        return signature

    def request_reload(self) -> None:
        """Reload at the next loop turn (SIGHUP), even if nothing seems changed."""
        self._signature = ()
        self._wake.set()

    def check(self) -> bool:
        """Reload if the file changed (on the caller's thread); True when swapped."""
        if not self._changed():
            return False
        try:
            new = self.load()
        except ConfigError as exc:
            return self._reject(exc)
        return self._install(new)

    async def check_off_loop(self) -> bool:
        """check(), with the load on the watcher's thread and the swap on the loop."""
        if not self._changed():
            return False
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="config-reload")
        loop = asyncio.get_running_loop()
        try:
            new = await loop.run_in_executor(self._executor, self._load_quietly)
        except ConfigError as exc:
            return self._reject(exc)
        return self._install(new)

    def _load_quietly(self) -> T:
        with cyclic_gc_paused(), _short_gil_turns():
            return self.load()

    def _changed(self) -> bool:
        signature = self._current_signature()
        if signature == self._signature:
            return False
        self._signature = signature
        return True

    def _reject(self, exc: ConfigError) -> bool:
        # Kept without its traceback, whose frames would keep the rejected document.
        self.holder.last_error = exc.with_traceback(None)
        if self.loads is not None:
            self.loads.rejected()
        log.error(
            "config reload rejected, keeping the last good config",
            extra={"error": str(exc), "file": exc.file, "line": exc.line},
        )
        return False

    def _install(self, new: T) -> bool:
        self.holder.swap(new)
        if self.loads is not None:
            self.loads.loaded()
        self._signature = self._current_signature()  # the new snapshot may name other files
        log.info(
            "config reloaded",
            extra={"file": str(self.path), "generation": self.holder.generation},
        )
        if self.on_reload is not None:
            self.on_reload(new)
        return True

    async def run(self) -> None:
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.interval)
                self._wake.clear()
                try:
                    await self.check_off_loop()
                except Exception:  # a watcher that dies silently is worse than a log line
                    log.exception("config watcher error")
        finally:
            if self._executor is not None:
                # A load in progress finishes on its own (bounded by the loader's
                # limits); nothing waits for it.
                self._executor.shutdown(wait=False, cancel_futures=True)
                self._executor = None
