"""Property-based fuzzing of CheckRequest -> decision: 0 wrong allows, 0 crashes.

Requests are built from the policy's valid credentials, known-bad ones and
mutations of both (flipped, truncated, re-spelled base64, swapped segments),
ambiguous paths, forged identity headers, duplicate headers, wrong principals
and Envoy context extensions. An allow must be explained by the oracle in
authz_fuzz_kit (its own reading of the policy); bench/fuzz_authz.py runs 1M.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.kits.authz_fuzz_kit import FuzzTarget

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FuzzTarget]:
    yield FuzzTarget.build(tmp_path_factory.mktemp("fuzz"))


@settings(max_examples=3000, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(rng=st.randoms(use_true_random=False))
def test_no_fuzzed_check_request_is_wrongly_allowed(target: FuzzTarget, rng: random.Random) -> None:
    request = target.request(rng)
    outcome = target.decide(request)
    assert not outcome.internal_error, f"the engine raised on {request}"
    assert not outcome.wrong_allow, f"allowed without a reason: {request}"


def test_the_run_reaches_every_kind_of_answer(target: FuzzTarget) -> None:
    rng = random.Random(7)
    outcomes = [target.decide(target.request(rng)) for _ in range(3000)]
    codes = {o.code for o in outcomes}
    assert {"ok", "invalid_token", "invalid_request", "insufficient_scope",
            "missing_credentials", "no_matching_route", "peer_not_allowed"} <= codes
    assert sum(o.allowed for o in outcomes) > 50  # allows happen: the oracle is exercised
    assert not any(o.wrong_allow or o.internal_error for o in outcomes)


def test_the_oracle_catches_a_policy_that_allows_too_much(tmp_path: Path) -> None:
    # orders-write without its scope rule: any valid token may POST /orders.
    weak = FuzzTarget.build(tmp_path, weakened=True)
    rng = random.Random(7)
    assert any(weak.decide(weak.request(rng)).wrong_allow for _ in range(5000))
