"""authz-service's Prometheus metrics (served by tollgate.metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from tollgate.metrics import REGISTRY

DECISIONS = Counter(
    "tollgate_authz_decisions",
    "Check decisions by outcome, stable error code and route policy.",
    ["decision", "code", "route"],
    registry=REGISTRY,
)
CHECK_SECONDS = Histogram(
    "tollgate_authz_check_duration_seconds",
    "Time to decide one Check, transport excluded.",
    buckets=(0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25, 1.0),
    registry=REGISTRY,
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
LIMIT_OUTCOMES = Counter(
    "tollgate_authz_rate_limit_decisions",
    "Rate-limit sets evaluated in the Check, by set and outcome (ok, over_limit, shadowed, "
    "store_failed_open, store_failed_closed).",
    ["limit_set", "outcome"],
    registry=REGISTRY,
)
