"""Wait for a started component to become ready: poll with a deadline, never sleep blindly."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


class NotReadyError(Exception):
    """A component did not become ready before its deadline, or exited while starting."""


def wait_until(
    name: str,
    probe: Callable[[], bool],
    *,
    timeout: float,
    process: subprocess.Popen[bytes] | None = None,
    interval: float = 0.05,
) -> None:
    """Call `probe` until it returns True; fail early if `process` exits meanwhile."""
    deadline = time.monotonic() + timeout
    while True:
        if process is not None and process.poll() is not None:
            raise NotReadyError(f"{name} exited with status {process.returncode} while starting")
        if probe():
            return
        if time.monotonic() >= deadline:
            raise NotReadyError(f"{name} not ready after {timeout:.0f}s")
        time.sleep(interval)


def grpc_serving(target: str) -> Callable[[], bool]:
    """A probe: the gRPC health service at `target` answers SERVING for the server."""

    def probe() -> bool:
        with grpc.insecure_channel(target) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=0.5)
            except grpc.RpcError:
                return False
            return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

    return probe


def http_ok(url: str) -> Callable[[], bool]:
    """A probe: GET `url` answers 200."""

    def probe() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=0.5) as reply:  # noqa: S310 (loopback URL we built)
                return bool(reply.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    return probe


def main(argv: list[str] | None = None) -> int:
    """`python -m tollgate.readiness TARGET`: exit 0 when TARGET's gRPC health is SERVING.

    The exec probe of containers whose gRPC server listens on a Unix socket, which a
    kubelet `grpc:` probe (TCP only) cannot reach.
    """
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m tollgate.readiness HOST:PORT|unix:PATH", file=sys.stderr)
        return 2
    return 0 if grpc_serving(args[0])() else 1


if __name__ == "__main__":
    sys.exit(main())
