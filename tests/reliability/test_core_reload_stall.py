"""A reload never stops a live service answering, however costly the file.

The file: 400 KB of YAML (within the loader's limits) that takes seconds of CPU
to parse and is then refused (bench/hostile_faults.py measures 1 MB). On the
event loop that was seconds without an answer; on a thread with the cyclic GC
running, full collections over the half-million live objects stopped every
thread for 100-500 ms each.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.kits.core_kit import OPEN_CONFIG, calling, large_invalid_config
from tests.kits.grpc_kit import authz_process, check_request
from tests.kits.processes import wait_for

pytestmark = pytest.mark.integration

# bench/hostile_faults.py measures the figure against the 50 ms target (a timed bound
# is the benchmark's job). This one tells "off the loop" from "on it" on a machine
# running the rest of the suite beside it: on the loop this file stops answers for
# seconds; off it the worst gap seen here under full load was 0.35 s.
MAX_GAP_SECONDS = 1.0


def test_a_live_service_keeps_answering_while_a_hostile_file_is_parsed(
    tmp_path: Path,
) -> None:
    config = tmp_path / "authz.yaml"
    config.write_text(OPEN_CONFIG)
    log = tmp_path / "authz.log"
    with authz_process(config, tmp_path) as (_, client):
        with calling(lambda: client.check(check_request(path="/open")).allowed) as caller:
            wait_for(lambda: caller.count() > 50, what="a steady stream of answers")
            started = time.monotonic()
            config.write_text(large_invalid_config(400_000))
            wait_for(lambda: "config reload rejected" in log.read_text(), timeout=120,
                     what="the hostile file rejected")
            ended = time.monotonic()
            during = [right for t, right in caller.answers if started <= t <= ended]
        assert caller.failures == []
        assert all(during)
        assert len(during) > 100  # it answered all along, not just before and after
        worst = caller.worst_gap(started, ended)
        assert worst < MAX_GAP_SECONDS, f"no answer for {worst * 1000:.0f} ms during the reload"
        assert client.check(check_request(path="/open")).allowed  # the last good config
