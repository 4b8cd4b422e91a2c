"""`ratelimit-service` as a real process: its JSON log lines, a gRPC stub, SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import IO

import grpc
import pytest
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

SERVICE = "envoy.service.ratelimit.v3.RateLimitService"
LogMatch = Callable[[dict[str, object]], bool]


class ServiceProcess:
    def __init__(self, args: list[str], env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ratelimit_service.cli", "--grpc-address", "127.0.0.1:0",
             "--log-format", "json", *args],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            env={**os.environ, **(env or {})},
        )
        self.logs: list[dict[str, object]] = []
        self.address = str(self.wait_log(lambda e: e.get("msg") == "serving")["address"])
        self.channel = grpc.insecure_channel(self.address)
        self.stub = rls_pb2_grpc.RateLimitServiceStub(self.channel)

    def wait_log(self, match: LogMatch, timeout: float = 20) -> dict[str, object]:
        deadline = time.monotonic() + timeout
        stream: IO[str] | None = self.proc.stderr
        assert stream is not None
        os.set_blocking(stream.fileno(), False)
        for entry in self.logs:
            if match(entry):
                return entry
        while time.monotonic() < deadline:
            line = stream.readline()
            if not line:
                if self.proc.poll() is not None:
                    pytest.fail(f"ratelimit-service exited with {self.proc.returncode}")
                time.sleep(0.02)
                continue
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue
            self.logs.append(entry)
            if match(entry):
                return entry
        pytest.fail("expected log line did not appear")

    def call(self, req: rls_pb2.RateLimitRequest) -> rls_pb2.RateLimitResponse:
        response: rls_pb2.RateLimitResponse = self.stub.ShouldRateLimit(req, timeout=10)
        return response

    def stop(self) -> int:
        self.channel.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=20)
        if self.proc.stderr is not None:
            self.proc.stderr.close()
        return code

    def health(self, name: str = "") -> int:
        stub = health_pb2_grpc.HealthStub(self.channel)
        status: int = stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=10).status
        return status

    def wait_health(self, status: int, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while self.health() != status or self.health(SERVICE) != status:
            if time.monotonic() > deadline:
                pytest.fail(f"health did not become {status} within {timeout} s")
            time.sleep(0.05)

