"""SIGTERM under load: every call is answered or refused UNAVAILABLE, none CANCELLED.

grpc.aio takes one call at a time from the C core; calls that reached it but not
yet Python when server.stop() began were dropped as CANCELLED (5-7 per SIGTERM
under load, 31 of 32 in flight here). The drain now holds the calls of its last
moments and refuses them UNAVAILABLE once stop() has begun.
"""

from __future__ import annotations

import asyncio
import collections
import os
import signal
import subprocess
import time
from pathlib import Path

import grpc
import pytest
from envoy.service.auth.v3 import external_auth_pb2_grpc

from tests.kits.core_kit import OPEN_CONFIG
from tests.kits.grpc_kit import check_request
from tests.kits.processes import binary, stop_process, wait_for

pytestmark = pytest.mark.integration

CLIENTS = 32
ANNOUNCE = 0.3
GRACE = 3.0


async def hammer(socket: str, proc: subprocess.Popen[bytes]) -> collections.Counter[str]:
    """CLIENTS callers back to back; SIGTERM once every caller has been answered (the
    load is on); run until refused or gone."""
    codes: collections.Counter[str] = collections.Counter()
    request = check_request(path="/open")
    signalled: list[float] = []
    answered: set[int] = set()  # the callers that have had an answer

    async def caller(index: int, channel: grpc.aio.Channel) -> None:
        stub = external_auth_pb2_grpc.AuthorizationStub(channel)
        while True:
            try:
                answer = await stub.Check(request, timeout=5)
                answered.add(index)
                codes["OK" if answer.status.code == 0 else "DENIED"] += 1
                if signalled and time.monotonic() - signalled[0] < ANNOUNCE:
                    codes["OK_AFTER_SIGTERM"] += 1
            except grpc.aio.AioRpcError as exc:
                codes[exc.code().name] += 1
                if signalled:
                    return
            if signalled and time.monotonic() - signalled[0] > GRACE + 2:
                return

    channels = [grpc.aio.insecure_channel(socket) for _ in range(4)]
    try:
        tasks = [asyncio.create_task(caller(i, channels[i % 4])) for i in range(CLIENTS)]
        deadline = time.monotonic() + 20
        while len(answered) < CLIENTS:  # every caller in flight, not a guess at how long
            assert time.monotonic() < deadline, f"the load never started: {codes}"
            await asyncio.sleep(0.01)
        signalled.append(time.monotonic())
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(asyncio.gather(*tasks), GRACE + 5)
    finally:
        for channel in channels:
            await channel.close()
    return codes


@pytest.mark.parametrize("run", range(3))
def test_sigterm_under_load_refuses_cleanly_and_cancels_nothing(
    run: int, tmp_path: Path
) -> None:
    config = tmp_path / "authz.yaml"
    config.write_text(OPEN_CONFIG)
    socket_path = tmp_path / "authz.sock"
    with (tmp_path / "authz.log").open("wb") as log:
        proc = subprocess.Popen(
            [binary("authz-service"), "--config", str(config),
             "--grpc-address", f"unix:{socket_path}",
             "--drain-announce-seconds", str(ANNOUNCE), "--drain-seconds", str(GRACE)],
            stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ),
        )
    try:
        wait_for(socket_path.exists, timeout=20, what="the socket")
        codes = asyncio.run(hammer(f"unix:{socket_path}", proc))
        assert proc.wait(timeout=GRACE + 5) == 0
    finally:
        stop_process(proc)
    assert set(codes) <= {"OK", "OK_AFTER_SIGTERM", "UNAVAILABLE"}, codes
    assert codes["OK"] > 100
    assert codes["OK_AFTER_SIGTERM"] > 0  # the announce window still answered
    assert codes["UNAVAILABLE"] == CLIENTS  # each caller's last call: refused, not dropped
