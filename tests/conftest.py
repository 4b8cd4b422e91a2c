from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.otlp_kit import Receiver
from tests.otlp_kit import otlp_receiver as _otlp_receiver
from tests.ratelimit.redis_procs import RedisProcess

# Every authz-service a test starts serves the HTTP door only where the test asks for it
# (by --http-address, which wins over this): its default port is shared by every
# process on the machine, and tests run beside each other.
os.environ.setdefault("AUTHZ_HTTP_ADDRESS", "off")


@pytest.fixture
def otlp_receiver() -> Iterator[tuple[str, Receiver]]:
    with _otlp_receiver() as endpoint_and_receiver:
        yield endpoint_and_receiver


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisProcess]:
    """A fresh redis-server on a free port for one test."""
    server = RedisProcess(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()
