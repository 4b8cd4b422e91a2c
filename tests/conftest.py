from __future__ import annotations

import os
import subprocess
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.kits.otlp_kit import Receiver
from tests.kits.otlp_kit import otlp_receiver as _otlp_receiver
from tests.kits.redis_procs import RedisProcess

# Every authz-service a test starts serves the HTTP door only where the test asks for it
# (by --http-address, which wins over this): its default port is shared by every
# process on the machine, and tests run beside each other.
os.environ.setdefault("AUTHZ_HTTP_ADDRESS", "off")


@pytest.fixture
def otlp_receiver() -> Iterator[tuple[str, Receiver]]:
    with _otlp_receiver() as endpoint_and_receiver:
        yield endpoint_and_receiver


# Every test that starts a process is marked `integration` (so `-m "not integration"` is the
# fast, process-free suite). Enforced, not remembered: while a test that is not so marked runs
# (its fixtures included), starting a process fails the test and names the mark it lacks.
_running: dict[str, str | None] = {"unmarked test": None}
_popen_init = subprocess.Popen.__init__


def _guarded_popen_init(self: subprocess.Popen[Any], *args: Any, **kwargs: Any) -> None:
    unmarked = _running["unmarked test"]
    if unmarked is not None:
        command = args[0] if args else kwargs.get("args")
        raise AssertionError(
            f"{unmarked} starts a process ({command!r}) but is not marked "
            "@pytest.mark.integration")
    _popen_init(self, *args, **kwargs)


subprocess.Popen.__init__ = _guarded_popen_init  # type: ignore[method-assign]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(
    item: pytest.Item, nextitem: pytest.Item | None,
) -> Generator[None, object, object]:
    _running["unmarked test"] = None if item.get_closest_marker("integration") else item.nodeid
    try:
        return (yield)
    finally:
        _running["unmarked test"] = None


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisProcess]:
    """A fresh redis-server on a free port for one test."""
    server = RedisProcess(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()
