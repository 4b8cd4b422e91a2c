"""Scrape a service's real /metrics endpoint and read samples from it."""

from __future__ import annotations

import urllib.request
from collections.abc import Callable, Mapping

from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape_text(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return str(response.read().decode())


def scrape(port: int) -> Samples:
    """Every sample of one scrape: (name, labels) -> value."""
    samples: Samples = {}
    for family in text_string_to_metric_families(scrape_text(port)):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, labels: Mapping[str, str] | None = None) -> float | None:
    return samples.get((name, frozenset((labels or {}).items())))


def reading(port: int, name: str, labels: Mapping[str, str] | None = None) -> Callable[[], float]:
    """A function that scrapes again and returns the sample (0 when absent)."""
    return lambda: value(scrape(port), name, labels) or 0.0


def cumulative_names(port: int) -> tuple[Samples, set[str]]:
    """One scrape, and the names of its samples that only grow (counters, histograms)."""
    samples: Samples = {}
    growing: set[str] = set()
    for family in text_string_to_metric_families(scrape_text(port)):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
            if family.type in ("counter", "histogram"):
                growing.add(sample.name)
    return samples, growing
