"""Several worker processes of one service on one address: a small supervisor.

Python serves one core per process, so `--workers N` starts N copies of the service
(fresh interpreters: `python -m <module> <the same arguments>`, never a fork of a
process that has started gRPC), each told its index through TOLLGATE_WORKER. On TCP
every worker binds the same port with SO_REUSEPORT and the kernel spreads incoming
connections over them. Unix sockets cannot be shared that way on Linux: worker 0
listens on the given path and worker i on `<path>.<i>`, all of them listed as
endpoints of the Envoy cluster (`socket_path_for`).

Each worker is a whole service: its own health, drain, config reload and metrics.
The supervisor forwards SIGTERM/SIGINT (drain) and SIGHUP (reload) to every worker,
restarts one that dies (after 1 s, doubling to 30 s while it keeps dying) and exits
when they have all stopped. A worker that exits with an error within its first
seconds (a bad config, a port in use) stops them all: every copy would fail alike.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import FrameType

log = logging.getLogger("tollgate.workers")

WORKER_ENV = "TOLLGATE_WORKER"
WORKERS_ENV = "TOLLGATE_WORKERS"
EARLY_SECONDS = 5.0  # a worker dying this soon after its start fails everything


def worker_index() -> int | None:
    """This process's worker index, or None when it is not a supervised worker."""
    raw = os.environ.get(WORKER_ENV, "")
    return int(raw) if raw.isdigit() else None


def socket_path_for(address: str, index: int | None) -> str:
    """`unix:PATH` for worker `index` (worker 0, or no workers: PATH itself)."""
    if not index or not address.startswith("unix:"):
        return address
    return f"{address}.{index}"


def port_for(address: str, index: int | None) -> str:
    """`HOST:PORT` shifted by the worker index, for listeners each worker needs alone
    (metrics); empty stays empty."""
    if not address or not index:
        return address
    host, _, port = address.rpartition(":")
    if not port.isdigit():
        return address
    return f"{host}:{int(port) + index}"


@dataclass
class _Worker:
    index: int
    proc: subprocess.Popen[bytes]
    started: float
    restarts: int = 0
    next_start: float = 0.0


@dataclass
class Supervisor:
    """Runs `count` workers of `python -m module *argv` until told to stop."""

    count: int
    module: str
    argv: Sequence[str]
    drain_seconds: float = 5.0
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    workers: dict[int, _Worker] = field(default_factory=dict)
    _stopping: bool = False
    _reload: bool = False

    def _spawn(self, index: int, restarts: int = 0) -> _Worker:
        env = {**self.env, WORKER_ENV: str(index), WORKERS_ENV: str(self.count)}
        proc = subprocess.Popen([sys.executable, "-m", self.module, *self.argv], env=env)
        log.info("worker started", extra={"worker": index, "pid": proc.pid})
        return _Worker(index, proc, time.monotonic(), restarts)

    def _signal(self, signum: int, _frame: FrameType | None) -> None:
        if signum == signal.SIGHUP:
            self._reload = True
        else:
            self._stopping = True

    def run(self) -> int:
        previous = {sig: signal.signal(sig, self._signal)
                    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
        try:
            for index in range(self.count):
                self.workers[index] = self._spawn(index)
            return self._watch()
        finally:
            self._stop_all()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _watch(self) -> int:
        while not self._stopping:
            if self._reload:
                self._reload = False
                self._send(signal.SIGHUP)
            now = time.monotonic()
            for index, worker in list(self.workers.items()):
                code = worker.proc.poll()
                if code is None:
                    continue
                if worker.next_start == 0.0:
                    # An error exit right away (a bad config, a port in use) would repeat
                    # in every copy; a signal (killed, OOM) is worth a restart.
                    if code > 0 and now - worker.started < EARLY_SECONDS and not worker.restarts:
                        log.error("worker failed at start; stopping every worker",
                                  extra={"worker": index, "code": code})
                        return code
                    delay = min(30.0, 2.0 ** worker.restarts)
                    worker.next_start = now + delay
                    log.error("worker exited; restarting",
                              extra={"worker": index, "code": code, "in_seconds": delay})
                elif now >= worker.next_start:
                    self.workers[index] = self._spawn(index, worker.restarts + 1)
            time.sleep(0.05)
        return 0

    def _send(self, signum: int) -> None:
        for worker in self.workers.values():
            if worker.proc.poll() is None:
                worker.proc.send_signal(signum)

    def _stop_all(self) -> None:
        """SIGTERM (each worker drains), then wait its drain plus a margin; kill stragglers."""
        self._send(signal.SIGTERM)
        deadline = time.monotonic() + self.drain_seconds + 5.0
        for worker in self.workers.values():
            remaining = max(0.1, deadline - time.monotonic())
            try:
                worker.proc.wait(timeout=remaining)
            except subprocess.TimeoutExpired:
                log.error("worker did not stop in time; killed", extra={"worker": worker.index})
                worker.proc.kill()
                worker.proc.wait(timeout=10)
        log.info("workers stopped")


def run_workers(
    count: int, module: str, argv: Sequence[str], *, drain_seconds: float = 5.0
) -> int:
    """Supervise `count` workers of `python -m module *argv`; the exit code to return."""
    return Supervisor(count, module, list(argv), drain_seconds=drain_seconds).run()
