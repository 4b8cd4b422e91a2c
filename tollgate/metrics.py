"""Prometheus metrics: a registry per process and an optional /metrics listener.

Metric names follow Prometheus conventions (`tollgate_<service>_<what>_<unit>`);
label values come from bounded sets (decision codes, configured route names).
"""

from __future__ import annotations

import logging

from prometheus_client import CollectorRegistry, start_http_server

log = logging.getLogger("tollgate.metrics")

REGISTRY = CollectorRegistry(auto_describe=True)


def serve_metrics(address: str) -> None:
    """Serve /metrics on HOST:PORT in a background thread; empty address: disabled."""
    if not address:
        return
    host, _, port = address.rpartition(":")
    if not port.isdigit():
        raise SystemExit(f"metrics address '{address}' is not HOST:PORT")
    start_http_server(int(port), addr=host.strip("[]") or "0.0.0.0", registry=REGISTRY)  # noqa: S104
    log.info("metrics served", extra={"address": address, "path": "/metrics"})
