"""Real redis-server processes on free ports (single and a 3-master cluster).

Missing binaries fail the test loudly: these suites must never be skipped silently.
Synchronisation is by polling with a deadline, never by sleeping a fixed time.
"""

from __future__ import annotations

import random
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.kits.processes import binary
from tests.kits.processes import wait_for as wait_until


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port(*, with_bus: bool = False) -> int:
    """A free port (and, for cluster nodes, a free port + 10000 for the cluster bus)."""
    for _ in range(200):
        port = random.randint(20000, 45000)
        if _port_free(port) and (not with_bus or _port_free(port + 10000)):
            return port
    raise RuntimeError("no free port found")


def cli(port: int, *args: str) -> str:
    done = subprocess.run(
        [binary("redis-cli"), "-h", "127.0.0.1", "-p", str(port), *args],
        capture_output=True, text=True, timeout=20, check=False,
    )
    return done.stdout


def _answers_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith((b"+PONG", b"-NOAUTH"))  # up, maybe with a password
    except OSError:
        return False


@dataclass
class RedisProcess:
    """One redis-server; `stop()` kills it, `start()` brings it back on the same port."""

    directory: Path
    port: int = 0
    cluster: bool = False
    proc: subprocess.Popen[bytes] | None = None
    extra: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def start(self) -> None:
        if not self.port:
            self.port = free_port(with_bus=self.cluster)
        args = [
            binary("redis-server"), "--port", str(self.port), "--bind", "127.0.0.1",
            "--save", "", "--appendonly", "no", "--dir", str(self.directory),
            "--protected-mode", "no", *self.extra,
        ]
        if self.cluster:
            args += ["--cluster-enabled", "yes",
                     "--cluster-config-file", f"nodes-{self.port}.conf",
                     "--cluster-node-timeout", "2000"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: _answers_ping(self.port), 10, f"redis-server on {self.port}")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None

    def command_calls(self) -> dict[str, int]:
        """Calls per command from INFO commandstats."""
        calls: dict[str, int] = {}
        for line in cli(self.port, "INFO", "commandstats").splitlines():
            if line.startswith("cmdstat_"):
                name, _, rest = line.partition(":")
                fields = dict(item.split("=") for item in rest.split(","))
                calls[name.removeprefix("cmdstat_")] = int(fields["calls"])
        return calls


@dataclass
class RedisCluster:
    nodes: list[RedisProcess]

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def start_cluster(directory: Path, masters: int = 3) -> RedisCluster:
    nodes = [RedisProcess(directory / f"n{i}", cluster=True) for i in range(masters)]
    try:
        for node in nodes:
            node.directory.mkdir(parents=True, exist_ok=True)
            node.start()
        out = subprocess.run(
            [binary("redis-cli"), "--cluster", "create",
             *[f"127.0.0.1:{n.port}" for n in nodes],
             "--cluster-replicas", "0", "--cluster-yes"],
            capture_output=True, text=True, timeout=60, check=False,
        )
        if out.returncode != 0:
            pytest.fail(f"redis-cli --cluster create failed: {out.stdout} {out.stderr}")
        for node in nodes:
            wait_until(
                lambda n=node: "cluster_state:ok" in cli(n.port, "CLUSTER", "INFO"),  # type: ignore[misc]
                30, f"cluster_state:ok on {node.port}",
            )
    except BaseException:
        for node in nodes:
            node.stop()
        raise
    return RedisCluster(nodes)
