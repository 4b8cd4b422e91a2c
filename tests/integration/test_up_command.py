"""`tollgate up` as a user runs it: prints the curl lines, stops cleanly, fails loudly."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import binary, free_port, wait_for

pytestmark = pytest.mark.integration

TOLLGATE = str(Path(sys.executable).parent / "tollgate")


def _ports() -> list[str]:
    return ["--https-port", str(free_port()), "--mtls-port", str(free_port()),
            "--admin-port", str(free_port()), "--upstream-port", str(free_port()),
            "--issuer-port", str(free_port())]


@pytest.fixture
def up(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], list[str]]]:
    binary("envoy")
    process = subprocess.Popen([TOLLGATE, "up", "--run-dir", str(tmp_path / "run"), *_ports()],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []

    def read() -> None:
        assert process.stdout is not None
        lines.extend(process.stdout)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        yield process, lines
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(10)
        reader.join(5)
        if process.stdout is not None:
            process.stdout.close()


def test_up_prints_curls_and_stops_on_sigterm(
    up: tuple[subprocess.Popen[str], list[str]], tmp_path: Path
) -> None:
    process, lines = up
    wait_for(lambda: any("Ctrl-C stops" in line for line in lines) or process.poll() is not None,
             timeout=60, what="tollgate up to print its curl lines")
    text = "".join(lines)
    assert process.poll() is None, text
    for label in ("# 200", "# 401", "# 403", "# 400", "# 429"):
        assert label in text
    assert "READER=ey" in text
    # The private keys exist, are the owner's only, and live under the run directory.
    keys = list((tmp_path / "run").rglob("*.key")) + list((tmp_path / "run").glob("*.pem"))
    assert keys and all(k.stat().st_mode & 0o077 == 0 for k in keys)
    process.send_signal(signal.SIGTERM)
    assert process.wait(30) == 0
    assert "stopping" in "".join(lines)


def test_up_fails_with_a_clear_message_when_a_port_is_taken(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        args = _ports()
        args[args.index("--upstream-port") + 1] = str(port)
        result = subprocess.run([TOLLGATE, "up", "--run-dir", str(tmp_path / "run"), *args],
                                capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 1
    assert "demo upstream" in result.stderr
    assert "cannot listen" in result.stderr
