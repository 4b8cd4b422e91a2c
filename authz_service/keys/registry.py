"""Key providers for every JWT source, kept across config reloads.

A reload that leaves an issuer's key settings unchanged keeps its provider, so a
config edit does not refetch every JWKS. Providers no config uses are stopped.
A reload compiles on the config watcher's thread: the provider table is locked,
and refresh tasks are only ever started and stopped on the event loop.

Readiness: every JWT source of the current config that holds no usable key (a
remote one before its first good fetch) is a blocker `keys:NAME` in the
Readiness given, cleared when its first usable key set arrives.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from authz_service.identity.jwt import JwtSource, KeyProvider
from authz_service.keys.jwks import JwksFileKeys, RemoteJwks, StaticKeys
from tollgate.health import Readiness

if TYPE_CHECKING:
    import httpx  # imported when a remote key source needs a client: ~4 MB of RSS

log = logging.getLogger("authz.keys")
FILE_POLL_SECONDS = 1.0

Provider = StaticKeys | JwksFileKeys | RemoteJwks


class KeyRegistry:
    def __init__(
        self, client: httpx.AsyncClient | None = None, readiness: Readiness | None = None
    ) -> None:
        self._client = client
        self.readiness = readiness if readiness is not None else Readiness()
        self._providers: dict[tuple[str, str, str], Provider] = {}
        self._by_name: dict[str, Provider] = {}
        self._tasks: dict[tuple[str, str, str], asyncio.Task[None]] = {}
        self._running = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()

    @property
    def client(self) -> httpx.AsyncClient:
        with self._lock:
            return self._make_client()

    def _make_client(self) -> httpx.AsyncClient:
        if self._client is None:
            import httpx  # noqa: PLC0415 - only file- or inline-keyed configs never get here

            # No redirects: a JWKS URL that redirects elsewhere is a misconfiguration.
            self._client = httpx.AsyncClient(follow_redirects=False)
        return self._client

    def factory(self, base_dir: Path) -> _Factory:
        return _Factory(self, base_dir)

    def _provider(self, name: str, source: JwtSource, base_dir: Path) -> KeyProvider:
        key = (name, source.model_dump_json(), str(base_dir))
        with self._lock:
            existing = self._providers.get(key)
            if existing is None:
                existing = self._build(name, source, base_dir)
                self._providers[key] = existing
            return existing

    def _build(self, name: str, source: JwtSource, base_dir: Path) -> Provider:
        if source.shared_secret_env is not None:
            return StaticKeys(source)
        if source.jwks_file is not None:
            path = Path(source.jwks_file)
            return JwksFileKeys(path if path.is_absolute() else base_dir / path)
        remote = RemoteJwks(name, source, self._make_client())
        remote.on_change = self._update_readiness
        return remote

    def activate(self, names: dict[str, KeyProvider]) -> None:
        """Make these providers current (after a successful compile); stop the rest.

        Called from any thread; the tasks change on the event loop, before the new
        snapshot is swapped in there (call_soon_threadsafe keeps the order).
        """
        loop = self._loop
        if loop is not None and not _on(loop):
            loop.call_soon_threadsafe(self._activate, names)
        else:
            self._activate(names)

    def _activate(self, names: dict[str, KeyProvider]) -> None:
        with self._lock:
            self._by_name = {name: p for name, p in names.items() if isinstance(p, Provider)}
            in_use = {id(p) for p in self._by_name.values()}
            stopped = [key for key in self._providers if id(self._providers[key]) not in in_use]
            for key in stopped:
                del self._providers[key]
            current = list(self._providers.items())
        for key in stopped:
            task = self._tasks.pop(key, None)
            if task is not None:
                task.cancel()
        if self._running:
            for key, provider in current:
                if key not in self._tasks:
                    self._start(key, provider)
        self._update_readiness()

    def _update_readiness(self) -> None:
        with self._lock:
            by_name = dict(self._by_name)
        self.readiness.replace("keys:", {
            f"keys:{name}": "no usable signing keys yet"
            for name, provider in by_name.items()
            if not provider.key_set.usable
        })

    def keys_held(self) -> dict[str, int]:
        """Usable keys per JWT source of the current config (the metric's reading)."""
        with self._lock:
            by_name = dict(self._by_name)
        return {name: len(p.key_set.keys) if p.key_set.usable else 0
                for name, p in by_name.items()}

    def has_keys(self, name: str) -> bool:
        """False while the named source holds no usable key (never fetched, or all bad)."""
        provider = self._by_name.get(name)
        return provider is None or provider.key_set.usable

    async def refresh_for_unknown_kid(self, name: str) -> bool:
        provider = self._by_name.get(name)
        if isinstance(provider, RemoteJwks):
            return await provider.refresh_for_unknown_kid()
        return False

    def _start(self, key: tuple[str, str, str], provider: Provider) -> None:
        if isinstance(provider, RemoteJwks) and key not in self._tasks:
            self._tasks[key] = asyncio.create_task(provider.run())

    async def run(self) -> None:
        """Background work: remote refresh loops, and polling of JWKS files."""
        self._loop = asyncio.get_running_loop()
        self._running = True
        with self._lock:
            current = list(self._providers.items())
        for key, provider in current:
            self._start(key, provider)
        try:
            while True:
                with self._lock:
                    providers = list(self._providers.values())
                for provider in providers:
                    if isinstance(provider, JwksFileKeys):
                        provider.poll()
                await asyncio.sleep(FILE_POLL_SECONDS)
        finally:
            self._running = False
            self._loop = None
            for task in self._tasks.values():
                task.cancel()
            for task in self._tasks.values():
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            self._tasks.clear()

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()


def _on(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


class _Factory:
    """KeyProviderFactory bound to one config file's directory; records what it built."""

    def __init__(self, registry: KeyRegistry, base_dir: Path) -> None:
        self.registry = registry
        self.base_dir = base_dir
        self.built: dict[str, KeyProvider] = {}

    def __call__(self, name: str, source: JwtSource) -> KeyProvider:
        provider = self.registry._provider(name, source, self.base_dir)
        self.built[name] = provider
        return provider
