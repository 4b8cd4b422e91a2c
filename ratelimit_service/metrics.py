"""ratelimit-service's Prometheus metrics (served by tollgate.metrics).

Per-rule counters are the reference's statsd counters (`total_hits`, `over_limit`,
`near_limit`, `within_limit`, `shadow_mode`, `over_limit_with_local_cache`) kept in
`Stats` on the hot path and read only at scrape time, so counting costs a dict update.
Their `key` label is the rule's stats key: bounded by the config unless a rule uses
`detailed_metric` or `value_to_metric`, which put request values in it (as the
reference does in its stat names).

The same counters are also exposed under envoyproxy/ratelimit's Prometheus names
(ratelimit_service.reference_metrics), so a dashboard built for it works unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import Counter, Histogram
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from ratelimit_service.models import Stats
from ratelimit_service.reference_metrics import register_reference_metrics
from tollgate.metrics import REGISTRY, ConfigLoads

DECISIONS = Counter(
    "tollgate_ratelimit_decisions",
    "ShouldRateLimit answers by outcome.",
    ["outcome"],
    registry=REGISTRY,
)
DECISION_SECONDS = Histogram(
    "tollgate_ratelimit_decision_duration_seconds",
    "Time to decide one ShouldRateLimit, store round trip included, transport excluded.",
    buckets=(0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25, 1.0),
    registry=REGISTRY,
)
# Pre-bound children: a label lookup per request is measurable on the hot path.
OK = DECISIONS.labels("ok")
OVER_LIMIT = DECISIONS.labels("over_limit")
INVALID = DECISIONS.labels("invalid_request")
UNAVAILABLE = DECISIONS.labels("store_unavailable")  # failing closed
FAILED_OPEN = DECISIONS.labels("failed_open")  # store down, answered OK
INTERNAL = DECISIONS.labels("internal_error")
CONFIG_LOADS = ConfigLoads("tollgate_ratelimit")


class StatsCollector(Collector):
    """Exposes a RateLimiter's Stats as `tollgate_ratelimit_rule_hits_total{key,stat}`."""

    def __init__(self, stats: Stats) -> None:
        self.stats = stats

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(
            "tollgate_ratelimit_rule_hits",
            "Hits per rule stats key and outcome (the reference's statsd counters).",
            labels=["key", "stat"],
        )
        for name, value in list(self.stats.counters.items()):
            key, _, stat = name.rpartition(".")
            family.add_metric([key, stat], value)
        yield family


def register_stats(stats: Stats) -> None:
    """Expose `stats` on the process registry (once per process), under our names and
    the reference's."""
    REGISTRY.register(StatsCollector(stats))
    register_reference_metrics(stats, CONFIG_LOADS)
