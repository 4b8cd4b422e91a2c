"""The gRPC core settings reach grpc in the service processes, and grpc knows them."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tollgate.grpc_env import DEFAULT_EXPERIMENTS

# grpc reads GRPC_EXPERIMENTS when its extension module loads; this runs in a new
# interpreter with the service's entry module imported first, as the scripts do.
_PROBE = """
import {module}
import grpc, os
server = grpc.aio.server()
print(os.environ["GRPC_EXPERIMENTS"])
"""


@pytest.mark.integration
@pytest.mark.parametrize("module", ["authz_service.cli", "ratelimit_service.cli"])
def test_services_set_the_experiment_and_grpc_accepts_it(module: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "GRPC_EXPERIMENTS"}
    result = subprocess.run(
        [sys.executable, "-c", _PROBE.format(module=module)],
        capture_output=True, text=True, env=env, check=True, timeout=60,
    )
    assert result.stdout.strip() == DEFAULT_EXPERIMENTS
    # A grpcio that dropped the experiment says so on stderr at start-up.
    assert "Unknown experiment" not in result.stderr, result.stderr


@pytest.mark.integration
def test_an_operators_setting_wins() -> None:
    env = {**os.environ, "GRPC_EXPERIMENTS": "-event_engine_client"}
    result = subprocess.run(
        [sys.executable, "-c", _PROBE.format(module="authz_service.cli")],
        capture_output=True, text=True, env=env, check=True, timeout=60,
    )
    assert result.stdout.strip() == "-event_engine_client"
