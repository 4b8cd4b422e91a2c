"""Rate-limit counters under envoyproxy/ratelimit's Prometheus names and labels.

Its Prometheus sink maps statsd names through statsd_exporter's default mapping:
`ratelimit.service.rate_limit.DOMAIN.KEY1[.KEY2...].STAT` becomes
`ratelimit_service_rate_limit_STAT{domain, key1[, key2]}`, and the config counters
`ratelimit_service_config_load_success` / `_error`. Exposed from the same Stats as our
own names (in ratelimit-service, and in authz-service for the limits it counts in the
Check), read at scrape time, so a dashboard built for the reference works unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import Metric, UnknownMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

from ratelimit_service.models import Stats
from tollgate.metrics import REGISTRY, ConfigLoads

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


def register_reference_metrics(
    stats: Stats, loads: ConfigLoads, registry: CollectorRegistry = REGISTRY
) -> None:
    registry.register(ReferenceCollector(stats, loads))
