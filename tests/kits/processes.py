"""Test support shared by suites: real processes, free ports, polls with deadlines."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tollgate_cli.stack import terminate

VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def accepts(port: int) -> bool:
    """Something listens on 127.0.0.1:port (a TCP connect succeeds)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    """Poll until predicate() is true; fail with `what` after timeout seconds."""
    deadline = time.monotonic() + timeout
    delay = 0.005
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


def stays_false(predicate: Callable[[], bool], seconds: float, what: str = "condition") -> None:
    """Watch predicate() for `seconds`; fail the moment it becomes true. For asserting
    that something does NOT happen within a window chosen so that it would if broken."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            raise AssertionError(f"{what} happened within {seconds}s")
        time.sleep(0.05)


def binary(name: str) -> str:
    """Path of a required binary: the venv's first, then PATH. Fails loudly if absent."""
    candidate = VENV_BIN / name
    if candidate.exists():
        return str(candidate)
    for directory in os.environ.get("PATH", "").split(os.pathsep):
        path = Path(directory) / name
        if path.exists():
            return str(path)
    raise AssertionError(f"required binary '{name}' not found (run ./scripts/test to install it)")


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """Stop a process the tests started (the same routine `tollgate up` uses)."""
    terminate(proc, timeout)
