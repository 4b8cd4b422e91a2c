"""Prometheus metrics: a registry per process and an optional /metrics listener.

Metric names follow Prometheus conventions (`tollgate_<service>_<what>_<unit>`);
label values come from bounded sets (decision codes, configured route names).
"""

from __future__ import annotations

import ipaddress
import logging
import platform
import time
from collections.abc import Iterator
from importlib import metadata

from prometheus_client import (
    CollectorRegistry,
    Counter,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    start_http_server,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

log = logging.getLogger("tollgate.metrics")

REGISTRY = CollectorRegistry(auto_describe=True)
LOOPBACK = "127.0.0.1"

# Requests gRPC could not deserialize, by method (only registered methods get that
# far, so the label is bounded); the log shows one line per method per interval.
MALFORMED_MESSAGES = Counter(
    "tollgate_grpc_malformed_messages_total",
    "Request messages that could not be decoded, refused before any handler ran",
    ["method"],
    registry=REGISTRY,
)

# process_* (CPU, memory, open files, start time), python_info and python_gc_*: what
# prometheus_client's default registry has, on ours.
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)
GCCollector(registry=REGISTRY)


def version() -> str:
    """The installed tollgate distribution's version (`unknown` in a bare checkout)."""
    try:
        return metadata.version("tollgate")
    except metadata.PackageNotFoundError:
        return "unknown"


class BuildInfo(Collector):
    """`tollgate_build_info{service,version,python}` 1: which build is running where."""

    def __init__(self, service: str) -> None:
        self.labels = [service, version(), platform.python_version()]

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "tollgate_build_info", "The running build: always 1, the facts are its labels.",
            labels=["service", "version", "python"],
        )
        family.add_metric(self.labels, 1)
        yield family


def register_build_info(service: str, registry: CollectorRegistry = REGISTRY) -> None:
    registry.register(BuildInfo(service))


class ConfigLoads(Collector):
    """Config loads by result and the time of the last good one, for one service.

    `<prefix>_config_loads_total{result="success"|"error"}`,
    `<prefix>_config_last_success_timestamp_seconds` and
    `<prefix>_config_last_reload_successful` (0 while the newest file is refused and the
    last good config serves, as Prometheus's own gauge of that name). A load is counted
    where it happens: the start and every reload the watcher tries (tollgate.reload).
    """

    def __init__(self, prefix: str, registry: CollectorRegistry | None = REGISTRY) -> None:
        self.prefix = prefix
        self.successes = 0
        self.errors = 0
        self.last_success = 0.0
        self.last_ok = True
        if registry is not None:
            registry.register(self)

    def loaded(self) -> None:
        self.successes += 1
        self.last_success = time.time()
        self.last_ok = True

    def rejected(self) -> None:
        self.errors += 1
        self.last_ok = False

    def collect(self) -> Iterator[Metric]:
        loads = CounterMetricFamily(
            f"{self.prefix}_config_loads", "Config loads (start and reloads) by result.",
            labels=["result"],
        )
        loads.add_metric(["success"], self.successes)
        loads.add_metric(["error"], self.errors)
        yield loads
        yield GaugeMetricFamily(
            f"{self.prefix}_config_last_success_timestamp_seconds",
            "Unix time of the last config load that succeeded (the config serving now).",
            value=self.last_success,
        )
        yield GaugeMetricFamily(
            f"{self.prefix}_config_last_reload_successful",
            "1 when the newest config loaded; 0 while it is refused (the last good one serves).",
            value=1 if self.last_ok else 0,
        )


def metrics_bind(address: str) -> tuple[str, int]:
    """HOST:PORT -> (host, port). Without a host (`:9464`) it is loopback.

    Metrics show routes, codes and traffic volumes: they leave the pod only when
    an address says so (`0.0.0.0:9464`, `[::]:9464` or a specific interface).
    """
    host, sep, port = address.strip().rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) <= 65535:
        raise ValueError(f"metrics address '{address}' is not HOST:PORT")
    host = host.strip()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"metrics address '{address}' is not HOST:PORT") from None
    elif ":" in host:
        raise ValueError(f"metrics address '{address}': write IPv6 hosts as [ADDR]:PORT")
    return host or LOOPBACK, int(port)


def serve_metrics(address: str) -> None:
    """Serve /metrics on HOST:PORT in a background thread; empty address: disabled."""
    if not address:
        return
    try:
        host, port = metrics_bind(address)
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    try:
        start_http_server(port, addr=host, registry=REGISTRY)
    except OSError as exc:  # taken port, unknown host: one line, not a traceback
        raise SystemExit(f"cannot serve metrics on {address}: {exc.strerror or exc}") from None
    log.info("metrics served", extra={"address": f"{host}:{port}", "path": "/metrics"})
