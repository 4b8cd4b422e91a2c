"""ratelimit-service's Prometheus metrics (served by tollgate.metrics).

Per-rule counters are the reference's statsd counters (`total_hits`, `over_limit`,
`near_limit`, `within_limit`, `shadow_mode`, `over_limit_with_local_cache`) kept in
`Stats` on the hot path and read only at scrape time, so counting costs a dict update.
Their `key` label is the rule's stats key: bounded by the config unless a rule uses
`detailed_metric` or `value_to_metric`, which put request values in it (as the
reference does in its stat names).

The same counters are also exposed under the names envoyproxy/ratelimit's Prometheus
sink gives them (its statsd_exporter mapping: `ratelimit_service_rate_limit_over_limit
{domain,key1,key2}`, `ratelimit_service_config_load_success`, ...), so a dashboard
built for the reference works unchanged (ReferenceCollector).
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import Counter, Histogram
from prometheus_client.core import CounterMetricFamily, Metric, UnknownMetricFamily
from prometheus_client.registry import Collector

from ratelimit_service.model import Stats
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


# Stats keys that are not a rule's: the service's own counters and the overflow bucket.
_SERVICE_KEY = "service"
_OVERFLOW_KEY = "overflow"
# The reference's `ratelimit.service.call.should_rate_limit.<err_type>` for our stats.
_ERROR_TYPES = {"store_error": "redis_error"}


class ReferenceCollector(Collector):
    """The reference's Prometheus names, read from the same counters at scrape time.

    Its statsd_exporter mapping splits a stats key `DOMAIN.KEY1[.KEY2...]` into the
    labels `domain`, `key1` and (with a second descriptor entry) `key2`, and exports
    the counters without a `_total` suffix: so are these (untyped, as a counter
    without the suffix can only be written)."""

    def __init__(self, stats: Stats, loads: ConfigLoads) -> None:
        self.stats = stats
        self.loads = loads

    def collect(self) -> Iterator[Metric]:
        two: dict[str, UnknownMetricFamily] = {}
        three: dict[str, UnknownMetricFamily] = {}
        errors = UnknownMetricFamily(
            "ratelimit_service_should_rate_limit_error",
            "ShouldRateLimit errors by type (reference name).", labels=["err_type"],
        )
        for name, value in list(self.stats.counters.items()):
            key, _, stat = name.rpartition(".")
            if key == _SERVICE_KEY:
                if stat in _ERROR_TYPES:
                    errors.add_metric([_ERROR_TYPES[stat]], value)
                continue
            if key == _OVERFLOW_KEY:
                continue
            domain, _, rest = key.partition(".")
            key1, _, tail = rest.partition(".")
            key2 = tail.partition(".")[0]
            # One family per label set, as the reference's two mappings make them.
            families = three if key2 else two
            family = families.get(stat)
            if family is None:
                family = families[stat] = UnknownMetricFamily(
                    f"ratelimit_service_rate_limit_{stat}",
                    f"Rule {stat} hits (reference name).",
                    labels=["domain", "key1", "key2"] if key2 else ["domain", "key1"],
                )
            family.add_metric([domain, key1, key2] if key2 else [domain, key1], value)
        yield from _merged(two, three)
        yield errors
        yield UnknownMetricFamily(
            "ratelimit_service_config_load_success",
            "Config loads that succeeded (reference name).", value=self.loads.successes,
        )
        yield UnknownMetricFamily(
            "ratelimit_service_config_load_error",
            "Config loads that failed (reference name).", value=self.loads.errors,
        )


def _merged(
    two: dict[str, UnknownMetricFamily], three: dict[str, UnknownMetricFamily]
) -> Iterator[Metric]:
    """One family per name: a name with both label sets carries the samples of both."""
    for stat, family in two.items():
        if stat in three:
            family.samples.extend(three.pop(stat).samples)
        yield family
    yield from three.values()


def register_stats(stats: Stats) -> None:
    """Expose `stats` on the process registry (once per process), under our names and
    the reference's."""
    REGISTRY.register(StatsCollector(stats))
    REGISTRY.register(ReferenceCollector(stats, CONFIG_LOADS))
