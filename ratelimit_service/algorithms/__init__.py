"""Counting algorithms, one module each, and the registry that names them.

Every algorithm is one object (see `base.CountingAlgorithm`) reporting a `Usage`
(hits used before and after this request, seconds until reset), so the threshold
logic in `decision` is the same for all of them and stores only run operations.
A new algorithm is one module plus one line in REGISTRY.
"""

from __future__ import annotations

from ratelimit_service.algorithms.base import CountingAlgorithm
from ratelimit_service.algorithms.fixed_window import FIXED_WINDOW
from ratelimit_service.algorithms.gcra import GCRA
from ratelimit_service.algorithms.sliding_window import SLIDING_WINDOW
from ratelimit_service.algorithms.token_bucket import TOKEN_BUCKET

REGISTRY: dict[str, CountingAlgorithm] = {
    FIXED_WINDOW.name: FIXED_WINDOW,
    SLIDING_WINDOW.name: SLIDING_WINDOW,
    GCRA.name: GCRA,
    TOKEN_BUCKET.name: TOKEN_BUCKET,
}


def algorithm_for(name: str) -> CountingAlgorithm:
    """The algorithm named `name` (KeyError for an unknown name; configs are checked)."""
    return REGISTRY[name]


__all__ = ["REGISTRY", "CountingAlgorithm", "algorithm_for"]
