"""Algorithms and the in-memory store with an injected clock; Hypothesis for the invariants."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from ratelimit_service.algorithms import REGISTRY, fixed_window, gcra, sliding_window
from ratelimit_service.algorithms.base import reset_seconds
from ratelimit_service.models import Algorithm, CounterOp, Limit, Unit
from ratelimit_service.stores.memory import MemoryStore
from tests.kits.ratelimit_kit import T0

MINUTE = int(T0) // 60 * 60  # start of T0's minute


def op(limit: int, unit: Unit = Unit.MINUTE, algorithm: str = Algorithm.FIXED_WINDOW,
       hits: int = 1, key: str = "d_k_v_") -> CounterOp:
    return CounterOp(key, hits, Limit(limit, unit, algorithm=algorithm))


def test_fixed_window_keys_align_to_unix_time() -> None:
    assert fixed_window.window_key("p_", MINUTE + 59.9, Unit.MINUTE) == f"p_{MINUTE}"
    assert fixed_window.window_key("p_", MINUTE + 60, Unit.MINUTE) == f"p_{MINUTE + 60}"
    assert reset_seconds(MINUTE + 59.9, 60) == 1
    assert reset_seconds(MINUTE, 60) == 60
    assert Unit.MONTH.seconds == 30 * 86400 and Unit.YEAR.seconds == 365 * 86400


def test_fixed_window_resets_exactly_at_the_edge() -> None:
    store = MemoryStore()
    for _ in range(3):
        store.apply_now([op(3)], MINUTE + 59.999)
    assert store.apply_now([op(3)], MINUTE + 59.999)[0].after == 4
    assert store.apply_now([op(3)], MINUTE + 60.0)[0].after == 1


def test_memory_store_expires_and_is_bounded() -> None:
    store = MemoryStore(max_keys=10)
    for i in range(25):
        store.apply_now([op(5, key=f"k{i}_")], MINUTE)
    assert len(store) == 10
    # The least recently used key was evicted, the newest survive.
    assert store.apply_now([op(5, key="k24_")], MINUTE)[0].after == 2
    assert store.apply_now([op(5, key="k0_")], MINUTE)[0].after == 1
    # Everything of a past window goes, however many keys there were.
    for _ in range(4):
        store.apply_now([], MINUTE + 3600)
    assert len(store) <= 10 - 8 + 1


def test_sliding_window_weighs_the_previous_window() -> None:
    store = MemoryStore()
    sliding = op(10, algorithm=Algorithm.SLIDING_WINDOW)
    for _ in range(10):
        assert store.apply_now([sliding], MINUTE + 50)[0].after <= 10
    # 15 s into the next window, 75% of the previous 10 still count.
    usage = store.apply_now([sliding], MINUTE + 75)[0]
    assert (usage.before, usage.after) == (7, 8)
    assert sliding_window.previous_weight(MINUTE + 75, Unit.MINUTE) == 0.75


def test_gcra_allows_a_burst_then_the_steady_rate() -> None:
    limit = Limit(10, Unit.MINUTE, algorithm=Algorithm.GCRA)  # one hit per 6 s
    state = gcra.EMPTY
    now = int(T0 * 1000)
    afters = []
    for _ in range(11):
        state, usage = gcra.step(state, now, 1, limit)
        afters.append(usage.after)
    assert afters == [*range(1, 11), 11]  # the 11th is over and not added
    state, usage = gcra.step(state, now + 5_999, 1, limit)
    assert usage.after == 11
    state, usage = gcra.step(state, now + 6_000, 1, limit)
    assert usage.after == 10
    assert usage.reset_seconds == 60


def test_gcra_check_only_never_over() -> None:
    limit = Limit(1, Unit.SECOND, algorithm=Algorithm.GCRA)
    state, _ = gcra.step(gcra.EMPTY, 1000, 1, limit)
    _, usage = gcra.step(state, 1000, 0, limit)
    assert (usage.before, usage.after) == (1, 1)


requests = st.lists(
    st.tuples(st.integers(0, 180_000), st.integers(0, 3)), min_size=1, max_size=60
)


@settings(max_examples=150, deadline=None)
@given(requests=requests, limit=st.integers(0, 8), algorithm=st.sampled_from(sorted(REGISTRY)))
def test_no_algorithm_admits_more_than_its_bound(
    requests: list[tuple[int, int]], limit: int, algorithm: str
) -> None:
    """Admitted hits per fixed window <= limit; in any span T, the others admit at
    most limit * (1 + T / window) + limit. Fixed-window counts are exact."""
    store = MemoryStore()
    window = 60_000
    admitted: list[tuple[int, int]] = []
    total_per_window: dict[int, int] = {}
    for offset_ms, hits in sorted(requests):
        now = MINUTE + offset_ms / 1000
        usage = store.apply_now([op(limit, algorithm=algorithm, hits=hits)], now)[0]
        total_per_window[offset_ms // window] = total_per_window.get(offset_ms // window, 0) + hits
        if algorithm is Algorithm.FIXED_WINDOW:
            assert usage.after == total_per_window[offset_ms // window]
        if usage.after <= limit:
            admitted.append((offset_ms, hits))
    if algorithm is Algorithm.FIXED_WINDOW:
        per_window: dict[int, int] = {}
        for offset_ms, hits in admitted:
            per_window[offset_ms // window] = per_window.get(offset_ms // window, 0) + hits
        assert all(count <= limit for count in per_window.values())
    else:
        for start, _ in admitted:
            span = [h for t, h in admitted if start <= t < start + window]
            assert sum(span) <= 2 * limit


@settings(max_examples=100, deadline=None)
@given(requests=requests)
def test_gcra_in_memory_matches_the_pure_step(requests: list[tuple[int, int]]) -> None:
    store = MemoryStore()
    limit = Limit(5, Unit.SECOND, algorithm=Algorithm.GCRA)
    state = gcra.EMPTY
    for offset_ms, hits in sorted(requests):
        now_ms = int(T0 * 1000) + offset_ms
        state, expected = gcra.step(state, now_ms, hits, limit)
        got = store.apply_now([CounterOp("g_", hits, limit)], now_ms / 1000)[0]
        assert (got.before, got.after) == (expected.before, expected.after)


def test_stats_are_bounded() -> None:
    from ratelimit_service.models import Stats

    stats = Stats(max_keys=3)
    for i in range(10):
        stats.add(f"d.user_{i}", "total_hits")
    assert stats.get("d.user_0", "total_hits") == 1
    assert stats.get("overflow", "total_hits") == 7
    assert len(stats.counters) == 4
    assert stats.names.chars <= stats.names.max_chars  # the names it keeps are bounded too
    stats.add("d.user_0", "total_hits")
    assert stats.get("d.user_0", "total_hits") == 2


def test_a_memory_decision_finishes_without_ever_suspending() -> None:
    """authz drives the pipeline eagerly: one `send` must finish a memory-store decision."""
    from ratelimit_service.models import Descriptor, Entry, RateLimitQuery
    from tests.kits.ratelimit_kit import make_limiter, rules_from

    limiter = make_limiter(rules_from(
        "domain: e\ndescriptors:\n  - key: k\n    rate_limits:\n"
        "      - {unit: second, requests_per_unit: 1}\n"
        "      - {unit: day, requests_per_unit: 5, algorithm: token_bucket}\n"))
    query = RateLimitQuery("e", (Descriptor((Entry("k", "v"),)),))
    for expected in ("OK", "OVER_LIMIT"):
        coroutine = limiter.should_rate_limit(query)
        try:
            coroutine.send(None)
        except StopIteration as done:
            assert done.value.overall_code.name == expected
        else:
            coroutine.close()
            raise AssertionError("the memory store suspended")


def test_counter_keys_are_kept_per_window_and_bounded(monkeypatch) -> None:
    from tollgate.memo import KeptText

    kept = KeptText(max_chars=100)
    monkeypatch.setattr(fixed_window, "KEYS", kept)
    assert fixed_window.counter_key("d_k_a_", MINUTE) == f"d_k_a_{MINUTE}"
    assert fixed_window.counter_key("d_k_b_", MINUTE) == f"d_k_b_{MINUTE}"  # never shared
    assert fixed_window.counter_key("d_k_a_", MINUTE + 60) == f"d_k_a_{MINUTE + 60}"
    assert fixed_window.counter_key("d_k_a_", MINUTE) == f"d_k_a_{MINUTE}"  # kept
    assert len(kept.entries) == 3
    long = "d_k_" + "x" * 2000 + "_"  # a long client value: kept only while it fits
    assert fixed_window.counter_key(long, MINUTE) == f"{long}{MINUTE}"
    assert len(kept.entries) == 1
    assert fixed_window.counter_key("d_k_a_", MINUTE) == f"d_k_a_{MINUTE}"
    assert len(kept.entries) == 1 and kept.chars <= 100


def test_kept_counter_keys_still_give_each_descriptor_and_window_its_own_count() -> None:
    store = MemoryStore()
    for _ in range(3):
        store.apply_now([op(10, key="d_k_a_")], MINUTE + 1)
    assert store.apply_now([op(10, key="d_k_b_")], MINUTE + 1)[0].after == 1
    assert store.apply_now([op(10, key="d_k_a_")], MINUTE + 59)[0].after == 4
    assert store.apply_now([op(10, key="d_k_a_")], MINUTE + 60)[0].after == 1  # a new window
