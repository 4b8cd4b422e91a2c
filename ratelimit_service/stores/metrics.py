"""What the shared counter stores count, in either service that uses one.

One observation per Redis call (a pipelined batch of many requests' counters), not
per request, so the cost stays off the per-request path: the round trip from the
batch leaving to its reply (or failure), and the calls that failed, by reason.
"""

from __future__ import annotations

from tollgate.hot_metrics import LabelledCounter, LatencyHistogram

ROUND_TRIP_SECONDS = LatencyHistogram(
    "tollgate_store_round_trip_seconds",
    "Redis round trips of the counter store (one pipelined call, many counters).",
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
)
STORE_ERRORS = LabelledCounter(
    "tollgate_store_errors",
    "Counter-store calls that failed (unreachable, timed out, refused), by store kind.",
    ["store"],
)
REDIS_ERRORS = ("redis",)
