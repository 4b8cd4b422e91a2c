"""`tollgate up` as a user runs it: --check, Ctrl-C/SIGTERM, and a part that cannot start."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.kits.processes import binary, free_port, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def run_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="tg-"))
    yield path
    for child in sorted(path.rglob("*"), reverse=True):
        child.unlink() if not child.is_dir() else child.rmdir()
    path.rmdir()


def up(run_dir: Path, *extra: str, issuer_port: int | None = None) -> list[str]:
    return [binary("tollgate"), "up", "--run-dir", str(run_dir),
            "--https-port", str(free_port()), "--mtls-port", str(free_port()),
            "--issuer-port", str(issuer_port or free_port()), *extra]


@pytest.mark.parametrize(("layout", "transport"),
                         [("http", "uds"), ("http", "tcp"), ("grpc", "uds"), ("grpc", "tcp")])
def test_check_runs_the_demo_and_exits_zero(run_dir: Path, layout: str, transport: str) -> None:
    result = subprocess.run(up(run_dir, "--check", "--layout", layout, "--transport", transport),
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "all as expected" in result.stdout
    assert "200 200 200 200 200 429" in result.stdout
    assert "FAIL" not in result.stdout


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_up_prints_curl_lines_and_stops_on_a_signal(run_dir: Path, stop: signal.Signals
                                                     ) -> None:
    with subprocess.Popen(up(run_dir), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True) as proc:
        _up_then_stop(proc, run_dir, stop, parts=2)  # authz, envoy


def test_the_grpc_layout_runs_both_services_and_stops_them(run_dir: Path) -> None:
    with subprocess.Popen(up(run_dir, "--layout", "grpc"), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True) as proc:
        _up_then_stop(proc, run_dir, signal.SIGTERM, parts=3)  # authz, ratelimit, envoy


def _up_then_stop(proc: subprocess.Popen[str], run_dir: Path, stop: signal.Signals,
                  parts: int) -> None:
    assert proc.stdout is not None
    lines: list[str] = []
    os.set_blocking(proc.stdout.fileno(), False)

    def printed_all() -> bool:
        lines.extend(proc.stdout.readlines())  # type: ignore[union-attr]
        if proc.poll() is not None:
            raise AssertionError(f"tollgate up exited: {proc.stderr.read()}")  # type: ignore[union-attr]
        return any("more tokens" in line for line in lines)

    try:
        wait_for(printed_all, 60, "tollgate up to print its curl lines")
        text = "".join(lines)
        assert "export TOKEN=ey" in text
        assert text.count("curl -sS --cacert") >= 7
        assert f"--cert {run_dir}/admin.crt" in text
        pids = [int(p) for p in subprocess.run(
            ["pgrep", "-f", str(run_dir)], capture_output=True, text=True, check=False
        ).stdout.split()]
        assert len([p for p in pids if p != proc.pid]) == parts
        proc.send_signal(stop)
        assert proc.wait(30) == 0
        assert "stopping" in proc.stdout.read()
        # The children (services, Envoy) are gone with it.
        alive = [p for p in pids if p != proc.pid and _alive(p)]
        assert not alive, alive
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_a_part_that_cannot_start_is_a_clear_error(run_dir: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(up(run_dir, "--check", issuer_port=port), capture_output=True,
                                text=True, timeout=60, check=False)
    assert result.returncode == 1
    assert f"demo issuer: cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_taken_listener_port_names_envoy_and_its_log(run_dir: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        argv = up(run_dir, "--check")
        argv[argv.index("--https-port") + 1] = str(port)
        result = subprocess.run(argv, capture_output=True, text=True, timeout=90, check=False)
    assert result.returncode == 1
    assert "tollgate up: envoy" in result.stderr and "envoy.log" in result.stderr
    assert "Traceback" not in result.stderr


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie not yet reaped by its (gone) parent counts as stopped.
    try:
        return "Z" not in Path(f"/proc/{pid}/stat").read_text().split()[2]
    except OSError:
        return False

