"""authz-service's Prometheus metrics (served by tollgate.metrics)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from prometheus_client import Counter, Gauge
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from tollgate.hot_metrics import LabelledCounter, LatencyHistogram, ReadCounter
from tollgate.metrics import REGISTRY, ConfigLoads

# Counted on every request: the hot-path kinds (tollgate.hot_metrics), same exposition.
DECISIONS = LabelledCounter(
    "tollgate_authz_decisions",
    "Check decisions by outcome, stable error code and route policy.",
    ["decision", "code", "route"],
)
CHECK_SECONDS = LatencyHistogram(
    "tollgate_authz_check_duration_seconds",
    "Time to decide one Check, transport excluded.",
    buckets=(0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25, 1.0),
)
JWKS_FETCHES = Counter(
    "tollgate_authz_jwks_fetches",
    "JWKS / discovery fetches by identity source and result.",
    ["source", "result"],
    registry=REGISTRY,
)
TOKEN_CACHE_ENTRIES = Gauge(
    "tollgate_authz_token_cache_entries",
    "Verified tokens currently cached.",
    registry=REGISTRY,
)
LIMIT_OUTCOMES = LabelledCounter(
    "tollgate_authz_rate_limit_decisions",
    "Rate-limit sets evaluated in the Check, by set and outcome (ok, over_limit, shadowed, "
    "store_failed_open, store_failed_closed).",
    ["limit_set", "outcome"],
)
INTROSPECTIONS = Counter(
    "tollgate_authz_introspections",
    "Token introspection exchanges and waits by identity source and result (active, "
    "inactive, http_error, timeout, too_large, invalid_response, error, overloaded, "
    "wait_expired).",
    ["source", "result"],
    registry=REGISTRY,
)


WOULD_DENY = LabelledCounter(
    "tollgate_authz_would_deny",
    "Denials a shadow-mode (dry-run) route or policy let through, by stable error code.",
    ["code"],
)


DECISION_LOG_DROPPED = ReadCounter(
    "tollgate_authz_decision_log_dropped",
    "Decision records lost: the log's queue was full, or a sink (stdout, file, OTLP) "
    "refused them.",
)


CONFIG_LOADS = ConfigLoads("tollgate_authz")


class KeysHeld(Collector):
    """`tollgate_authz_jwks_keys{source}`: usable signing keys each JWT source of the
    current config holds, read at scrape time (0: every token of it is refused)."""

    def __init__(self, read: Callable[[], Mapping[str, int]]) -> None:
        self.read = read

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "tollgate_authz_jwks_keys",
            "Usable signing keys held per JWT identity source (0: its tokens are refused).",
            labels=["source"],
        )
        for source, count in sorted(self.read().items()):
            family.add_metric([source], count)
        yield family


def register_keys_held(read: Callable[[], Mapping[str, int]]) -> None:
    REGISTRY.register(KeysHeld(read))
