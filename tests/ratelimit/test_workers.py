"""`ratelimit-service --workers N`: worker processes on one address sharing one limit.

Real processes: the supervisor, its workers and redis-server. On TCP the workers
share a port (SO_REUSEPORT); on a Unix socket worker i listens on PATH.i. Each
worker has its own health, reload and drain; a killed worker is restarted.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

import grpc
import pytest
from envoy.service.ratelimit.v3 import rls_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.kits.processes import free_port
from tests.kits.ratelimit_kit import OK, descriptor, request
from tests.kits.redis_procs import RedisProcess

pytestmark = pytest.mark.integration

CONFIG = """
domain: wk
descriptors:
  - key: shared
    rate_limit: {unit: hour, requests_per_unit: 150}
"""


class Supervised:
    """`ratelimit-service --workers N` and its log lines."""

    def __init__(self, args: list[str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ratelimit_service.cli", "--log-format", "json",
             "--drain-seconds", "2", "--drain-announce-seconds", "0.2", *args],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        self.logs: list[dict[str, Any]] = []
        stream: IO[str] | None = self.proc.stderr
        assert stream is not None
        os.set_blocking(stream.fileno(), False)
        self.stream = stream

    def lines(self, match: Any, count: int = 1, timeout: float = 30) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            found = [e for e in self.logs if match(e)]
            if len(found) >= count:
                return found
            if time.monotonic() > deadline:
                pytest.fail(f"expected {count} log lines, saw {len(found)}: {self.logs[-5:]}")
            line = self.stream.readline()
            if not line:
                if self.proc.poll() is not None and not self.stream.readline():
                    pytest.fail(f"supervisor exited with {self.proc.returncode}: {self.logs}")
                time.sleep(0.02)
                continue
            try:
                self.logs.append(json.loads(line))
            except json.JSONDecodeError:
                continue

    def worker_pids(self) -> dict[int, int]:
        started = self.lines(lambda e: e.get("msg") == "worker started", 2)
        return {e["worker"]: e["pid"] for e in started}

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=30)
        if not self.stream.closed:
            for line in self.stream.read().splitlines():
                try:
                    self.logs.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
            self.stream.close()
        return code


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "wk.yaml"
    path.write_text(CONFIG)
    return path


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_the_memory_store_refuses_more_than_one_worker(config: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "ratelimit_service.cli", "--config", str(config), "--workers", "2"],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 2
    assert ("--workers 2 needs a shared store: the memory store counts in each process, so "
            "every limit would be multiplied by the workers (use --redis-url, or --workers 1)"
            ) in done.stderr


def test_workers_share_a_port_and_a_redis_backed_limit_exactly(
    config: Path, redis_server: RedisProcess
) -> None:
    port = free_port()
    service = Supervised(["--config", str(config), "--grpc-address", f"127.0.0.1:{port}",
                          "--redis-url", redis_server.url, "--workers", "2"])
    try:
        pids = service.worker_pids()
        service.lines(lambda e: e.get("msg") == "counter store ready", 2)
        before = {i: cpu_seconds(pid) for i, pid in pids.items()}
        # Many connections (the kernel spreads them over the workers), many in flight.
        channels = [grpc.insecure_channel(f"127.0.0.1:{port}",
                                          options=[("grpc.use_local_subchannel_pool", 1)])
                    for _ in range(16)]
        stubs = [rls_pb2_grpc.RateLimitServiceStub(c) for c in channels]
        req = request("wk", descriptor(("shared", "tenant")))
        futures = [stubs[i % 16].ShouldRateLimit.future(req, timeout=20) for i in range(600)]
        codes = [f.result().overall_code for f in futures]
        assert codes.count(OK) == 150
        used = {i: cpu_seconds(pid) - before[i] for i, pid in pids.items()}
        assert all(seconds > 0.05 for seconds in used.values()), used  # both answered
        for channel in channels:
            channel.close()
    finally:
        assert service.stop() == 0


def test_each_worker_has_its_own_socket_health_reload_and_drain(
    config: Path, redis_server: RedisProcess, tmp_path: Path
) -> None:
    sock = tmp_path / "rl.sock"
    service = Supervised(["--config", str(config), "--grpc-address", f"unix:{sock}",
                          "--redis-url", redis_server.url, "--workers", "2",
                          "--reload-interval", "60"])
    try:
        service.worker_pids()
        serving = service.lines(lambda e: e.get("msg") == "serving", 2)
        assert sorted(e["address"] for e in serving) == [f"unix:{sock}", f"unix:{sock}.1"]
        channels = [grpc.insecure_channel(f"unix:{path}") for path in (sock, f"{sock}.1")]
        for channel in channels:
            health = health_pb2_grpc.HealthStub(channel)
            deadline = time.monotonic() + 20
            while health.Check(health_pb2.HealthCheckRequest(), timeout=10).status != \
                    health_pb2.HealthCheckResponse.SERVING:
                assert time.monotonic() < deadline
                time.sleep(0.05)
            stub = rls_pb2_grpc.RateLimitServiceStub(channel)
            assert stub.ShouldRateLimit(request("wk", descriptor(("shared", "u"))),
                                        timeout=10).overall_code == OK
        # SIGHUP to the supervisor: every worker reloads.
        config.write_text(CONFIG.replace("150", "7"))
        service.proc.send_signal(signal.SIGHUP)
        service.lines(lambda e: e.get("msg") == "config reloaded", 2)
        for channel in channels:
            channel.close()
        # SIGTERM: every worker drains, the supervisor exits 0.
        assert service.stop() == 0
        assert len([e for e in service.logs if e.get("msg") == "draining"]) == 2
    finally:
        service.stop()


def test_a_killed_worker_is_restarted(config: Path, redis_server: RedisProcess) -> None:
    port = free_port()
    service = Supervised(["--config", str(config), "--grpc-address", f"127.0.0.1:{port}",
                          "--redis-url", redis_server.url, "--workers", "2"])
    try:
        pids = service.worker_pids()
        service.lines(lambda e: e.get("msg") == "serving", 2)
        os.kill(pids[1], signal.SIGKILL)
        service.lines(lambda e: e.get("msg") == "worker exited; restarting")
        again = service.lines(lambda e: e.get("msg") == "worker started", 3)[-1]
        assert again["worker"] == 1 and again["pid"] != pids[1]
        service.lines(lambda e: e.get("msg") == "serving", 3)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = rls_pb2_grpc.RateLimitServiceStub(channel)
            assert stub.ShouldRateLimit(request("wk", descriptor(("shared", "k"))),
                                        timeout=10).overall_code == OK
    finally:
        assert service.stop() == 0
