"""Atomic config snapshots and a file watcher that swaps them.

A reload builds the whole compiled snapshot first and swaps one reference, so a
request sees either the old config or the new one, never a mix. A file that fails
to load leaves the last good snapshot serving and logs the located error.

The watcher polls a signature of the file (or directory) that changes on every
way a deploy replaces it: an in-place write (mtime, size), an atomic rename (inode)
and the Kubernetes ConfigMap swap, where `config.yaml -> ..data/config.yaml` and
`..data` is re-pointed to a new timestamped directory (the resolved path changes).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Generic, TypeVar

from tollgate.config import ConfigError

T = TypeVar("T")
log = logging.getLogger("tollgate.reload")

Signature = tuple[tuple[str, int, int, int], ...]


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
    ) -> None:
        self.path = Path(path)
        self.holder = holder
        self.load = load
        self.interval = interval
        self.on_reload = on_reload
        # Files the current snapshot was built from besides `path` (e.g. rules it names).
        self.also_watch = also_watch
        self._signature = self._current_signature()
        self._wake = asyncio.Event()

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
        """Reload if the file changed; True when a new snapshot was swapped in."""
        signature = self._current_signature()
        if signature == self._signature:
            return False
        self._signature = signature
        try:
            new = self.load()
        except ConfigError as exc:
            self.holder.last_error = exc
            log.error(
                "config reload rejected, keeping the last good config",
                extra={"error": str(exc), "file": exc.file, "line": exc.line},
            )
            return False
        self.holder.swap(new)
        self._signature = self._current_signature()  # the new snapshot may name other files
        log.info(
            "config reloaded",
            extra={"file": str(self.path), "generation": self.holder.generation},
        )
        if self.on_reload is not None:
            self.on_reload(new)
        return True

    async def run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval)
            self._wake.clear()
            try:
                self.check()
            except Exception:  # a watcher that dies silently is worse than a log line
                log.exception("config watcher error")
