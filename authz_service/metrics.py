"""authz-service's Prometheus metrics (served by tollgate.metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

from tollgate.hot_metrics import LabelledCounter, LatencyHistogram, ReadCounter
from tollgate.metrics import REGISTRY

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
