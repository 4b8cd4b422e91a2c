"""One local stack (real Envoy, the services, demo issuer and upstream) per module and
layout: every test of the module runs against both layouts (`http`: authz's
plain-HTTP door deciding rate limits in the same call; `grpc`: ext_authz over gRPC plus
ratelimit-service), unless it asks for one with `@pytest.mark.parametrize("stack",
[...], indirect=True)`."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.kits.processes import free_port
from tollgate_cli.stack import Stack, StackOptions

LAYOUTS = ["http", "grpc"]


@pytest.fixture(scope="module", params=LAYOUTS)
def stack(request: pytest.FixtureRequest) -> Iterator[Stack]:
    # A short /tmp path: the run dir holds the Unix sockets (sun_path is 108 bytes).
    run_dir = Path(tempfile.mkdtemp(prefix="tg-"))
    options = StackOptions(run_dir=run_dir, https_port=free_port(), mtls_port=free_port(),
                           issuer_port=free_port(), envoy_log_level="error",
                           layout=request.param)
    running = Stack(options).start()
    try:
        yield running
    finally:
        running.stop()
        shutil.rmtree(run_dir, ignore_errors=True)
