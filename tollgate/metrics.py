"""Prometheus metrics: a registry per process and an optional /metrics listener.

Metric names follow Prometheus conventions (`tollgate_<service>_<what>_<unit>`);
label values come from bounded sets (decision codes, configured route names).
"""

from __future__ import annotations

import ipaddress
import logging

from prometheus_client import CollectorRegistry, Counter, start_http_server

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
