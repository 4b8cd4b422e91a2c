"""grpc.aio server bootstrap shared by both services.

Serves the given services plus `grpc.health.v1` and reflection on a TCP or
`unix:PATH` address. On SIGTERM/SIGINT health turns NOT_SERVING first (so Envoy
and Kubernetes stop sending), in-flight RPCs get a grace period, then it exits.
SIGHUP asks every watcher to reload now.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from tollgate.health import LIVENESS_SERVICE, Readiness
from tollgate.tls import ServerTls

log = logging.getLogger("tollgate.server")

# Options tuned for a sidecar talking to one local Envoy over many streams.
_SERVER_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.max_concurrent_streams", 1024),
    ("grpc.max_receive_message_length", 8 * 1024 * 1024),
    ("grpc.so_reuseport", 0),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 5000),
)


@dataclass(frozen=True)
class ServiceSpec:
    """One gRPC service: its full name (for health/reflection) and how to register it."""

    name: str
    register: Callable[[grpc.aio.Server], None]


def normalize_address(address: str) -> str:
    """Accept HOST:PORT, [V6]:PORT, unix:PATH and unix:///PATH."""
    address = address.strip()
    if address.startswith("unix:"):
        if not address[len("unix:") :].strip("/"):
            raise ValueError(f"empty unix socket path in '{address}'")
        return address
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"address '{address}' is not HOST:PORT or unix:PATH")
    return address


def _unix_path(address: str) -> str:
    rest = address[len("unix:") :]
    return "/" + rest.lstrip("/") if rest.startswith("//") else rest


def _bind(server: grpc.aio.Server, address: str, tls: ServerTls | None = None) -> int:
    # grpcio reports a taken port as a bare RuntimeError (or port 0): make it an
    # OSError naming the address, which the CLIs turn into one log line and exit 1.
    try:
        if tls is None:
            port: int = server.add_insecure_port(address)
        else:
            port = server.add_secure_port(address, tls.grpc_credentials())
    except RuntimeError:
        port = 0
    if port == 0:
        raise OSError(f"cannot bind {address}")
    return port


class _LastCallsGate(grpc.GenericRpcHandler):
    """At the end of a drain, holds the calls that still arrive, then refuses them.

    grpc.aio hands the server one call at a time; calls that reached the C core
    but not yet Python when server.stop() begins are dropped as CANCELLED, and
    under load there always are some. So once the announce window is over, new
    calls to our services are held here (registered ahead of the services, so it
    sees them first) until none has arrived for QUIET seconds, or for at most
    HOLD_LIMIT; then stop() starts with them in flight (nothing waiting in the C
    core), and they are answered UNAVAILABLE. Health and reflection pass.
    """

    QUIET = 0.05  # a loaded machine takes tens of ms to hand a call over from the C core
    HOLD_LIMIT = 0.2  # well under Envoy's ext_authz timeout (0.5 s in envoy/)

    def __init__(self, prefixes: tuple[str, ...]) -> None:
        self._prefixes = prefixes
        self._closing = False
        self._released: asyncio.Event | None = None
        self.last_arrival = 0.0
        self.held = 0

    def service(
        self, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        if not self._closing or not handler_call_details.method.startswith(self._prefixes):
            return None  # the services' own handlers answer
        return grpc.unary_unary_rpc_method_handler(self._refuse)

    async def _refuse(self, _request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        self.held += 1
        self.last_arrival = asyncio.get_running_loop().time()
        if self._released is not None:
            await self._released.wait()
        await context.abort(grpc.StatusCode.UNAVAILABLE, "server is shutting down")

    async def close(self, budget: float) -> None:
        """Hold new calls until they stop arriving (at most budget, HOLD_LIMIT)."""
        loop = asyncio.get_running_loop()
        self._released = asyncio.Event()
        self._closing = True
        started = self.last_arrival = loop.time()
        limit = started + min(budget, self.HOLD_LIMIT)
        # Each arrival moves the quiet point; sleep until it (or the limit) passes.
        for _ in range(1000):
            wake = min(limit, self.last_arrival + self.QUIET)
            if wake <= loop.time():
                break
            await asyncio.sleep(wake - loop.time())

    def release(self) -> None:
        if self._released is not None:
            self._released.set()


@dataclass
class GrpcApp:
    """A grpc.aio server with health and reflection; start() returns the bound address."""

    address: str
    services: Sequence[ServiceSpec]
    server: grpc.aio.Server | None = None
    health: health.aio.HealthServicer = field(default_factory=health.aio.HealthServicer)
    bound: str = ""
    # "" and each service name report readiness; LIVENESS_SERVICE only liveness.
    readiness: Readiness = field(default_factory=Readiness)
    reuse_port: bool = False  # SO_REUSEPORT: worker processes share one TCP port
    tls: ServerTls | None = None  # serve TLS (mTLS with a client CA), reloaded on change
    _gate: _LastCallsGate = field(default_factory=lambda: _LastCallsGate(()), repr=False)

    @property
    def health_names(self) -> tuple[str, ...]:
        """The names health answers readiness for: the server ("") and each service."""
        return ("", *(spec.name for spec in self.services))

    async def start(self) -> str:
        address = normalize_address(self.address)
        options = _SERVER_OPTIONS
        if self.reuse_port:
            options = (*(o for o in options if o[0] != "grpc.so_reuseport"),
                       ("grpc.so_reuseport", 1))
        server = grpc.aio.server(options=options)
        self._gate = _LastCallsGate(tuple(f"/{spec.name}/" for spec in self.services))
        server.add_generic_rpc_handlers((self._gate,))  # first: see stop()
        for spec in self.services:
            spec.register(server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        names = [spec.name for spec in self.services]
        reflection.enable_server_reflection(
            [*names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
             reflection.SERVICE_NAME],
            server,
        )
        if address.startswith("unix:"):
            path = _unix_path(address)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)  # a stale socket from a killed process
            _bind(server, address, self.tls)
            self.bound = address
        else:
            port = _bind(server, address, self.tls)
            host = address.rpartition(":")[0]
            self.bound = f"{host}:{port}"
        await server.start()
        await self.health.set(LIVENESS_SERVICE, health_pb2.HealthCheckResponse.SERVING)
        await self._show_readiness()
        loop = asyncio.get_running_loop()

        def changed(_ready: bool) -> None:  # on whichever thread changed it
            if not loop.is_closed():
                asyncio.run_coroutine_threadsafe(self._show_readiness(), loop)

        self.readiness.subscribe(changed)
        self.server = server
        return self.bound

    async def _show_readiness(self) -> None:
        # Read now, not when scheduled: changes from other threads may interleave.
        ready = self.readiness.ready
        status = health_pb2.HealthCheckResponse.SERVING if ready else (
            health_pb2.HealthCheckResponse.NOT_SERVING)
        for name in ("", *(spec.name for spec in self.services)):
            await self.health.set(name, status)

    async def drain(self, grace: float, announce: float = 0.0) -> None:
        """NOT_SERVING first, then let in-flight RPCs finish within grace seconds.

        `announce` seconds (taken from grace) keep answering RPCs after NOT_SERVING:
        server.stop() refuses new RPCs at once, health probes included, so without
        it no prober ever reads NOT_SERVING and callers see UNAVAILABLE instead.
        Then calls still arriving are held briefly and refused UNAVAILABLE, and
        in-flight ones finish: no call ends CANCELLED unless grace runs out.
        """
        if self.server is None:
            return
        await self.announce()
        announce = min(max(announce, 0.0), grace)
        if announce:
            await asyncio.sleep(announce)
        await self.stop(grace - announce)

    async def announce(self) -> None:
        """Health NOT_SERVING, while RPCs are still answered."""
        await self.health.enter_graceful_shutdown()

    async def stop(self, grace: float) -> None:
        """Refuse new RPCs UNAVAILABLE, give in-flight ones `grace` seconds, then stop.

        The calls of the announce window's last moments are held, then refused once
        server.stop() has begun, never CANCELLED (see _LastCallsGate).
        """
        if self.server is None:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(grace, 0.0)
        await self._gate.close(max(deadline - loop.time(), 0.0))
        stopping = asyncio.create_task(self.server.stop(max(deadline - loop.time(), 0.0)))
        await asyncio.sleep(0.005)  # stop() has begun: nothing new reaches the C core
        self._gate.release()
        await stopping
        if self.bound.startswith("unix:"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(_unix_path(self.bound))

    async def wait(self) -> None:
        if self.server is not None:
            await self.server.wait_for_termination()


class Listener(Protocol):
    """Anything serve_until_signal can start and drain (GrpcApp, tollgate.http_server)."""

    async def start(self) -> str: ...

    async def stop(self, grace: float) -> None: ...


async def serve_until_signal(
    app: GrpcApp | None,
    *,
    drain_seconds: float,
    announce_seconds: float = 0.0,
    listeners: Sequence[Listener] = (),
    background: Sequence[Callable[[], Awaitable[None]]] = (),
    on_reload_signal: Callable[[], None] | None = None,
    on_draining: Callable[[], None] | None = None,
    on_stop: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Run the gRPC app, other listeners and background tasks until SIGTERM/SIGINT,
    then drain: every door announces it (gRPC health NOT_SERVING, `on_draining` for
    the others' readiness), keeps answering for `announce_seconds`, then all stop
    together within the rest of `drain_seconds`."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if on_reload_signal is not None:
        loop.add_signal_handler(signal.SIGHUP, on_reload_signal)
    doors: list[Listener] = [*([app] if app is not None else []), *listeners]
    started: list[Listener] = []
    try:
        for door in doors:
            bound = await door.start()
            started.append(door)
            log.info("serving", extra={"address": bound})
    except BaseException:
        for door in started:
            await door.stop(0)
        raise
    tasks = [asyncio.create_task(_guard(fn)) for fn in background]
    await stop.wait()
    announce = min(max(announce_seconds, 0.0), drain_seconds)
    log.info("draining", extra={"grace_seconds": drain_seconds, "not_serving_seconds": announce})
    if app is not None:
        await app.announce()
    if on_draining is not None:
        on_draining()
    if announce:
        await asyncio.sleep(announce)
    await asyncio.gather(*(door.stop(drain_seconds - announce) for door in doors))
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    if on_stop is not None:
        await on_stop()
    log.info("stopped")


async def _guard(fn: Callable[[], Awaitable[None]]) -> None:
    try:
        await fn()
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("background task failed")


def run(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run the coroutine on uvloop where available (measured faster for grpc.aio)."""
    try:
        import uvloop  # noqa: PLC0415
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        asyncio.run(main())
    else:
        uvloop.run(main())
