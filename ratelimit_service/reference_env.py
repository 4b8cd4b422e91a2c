"""envoyproxy/ratelimit settings read from the environment, beyond the flags' own.

Two kinds: the reference's Prometheus switch (`USE_PROMETHEUS` + `PROMETHEUS_ADDR`),
which selects our /metrics listener, and settings we do not implement, each named at
start in one warning line so a migrated deployment does not silently lose them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

# Go's strconv.ParseBool, which the reference's envconfig uses.
_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
REFERENCE_PROMETHEUS_ADDR = ":9090"
REFERENCE_PROMETHEUS_PATH = "/metrics"


def _true(value: str) -> bool:
    return value.strip() in _TRUE


def _set(value: str) -> bool:
    return value.strip() != ""


@dataclass(frozen=True)
class Unsupported:
    variable: str
    applies: Callable[[str], bool]  # does this value ask for something we lack?
    instead: str


UNSUPPORTED = (
    Unsupported("USE_STATSD", _true, "statsd is not sent; scrape --metrics-address "
                "(reference names are exported beside ours)"),
    Unsupported("USE_DOG_STATSD", _true, "DogStatsD is not sent; scrape --metrics-address"),
    Unsupported("STATSD_HOST", _set, "statsd is not sent; scrape --metrics-address"),
    Unsupported("EXTRA_TAGS", _set, "add labels in the Prometheus scrape config"),
    Unsupported("PROMETHEUS_MAPPER_YAML", _set, "the reference's default mapping is built "
                "in; another mapping is not read"),
    Unsupported("BACKEND_TYPE", lambda v: v.strip().lower() not in ("", "redis"),
                "only Redis (REDIS_URL) or memory (no REDIS_URL: each replica counts "
                "alone) are implemented"),
    Unsupported("MEMCACHE_HOST_PORT", _set, "memcache is not implemented"),
    Unsupported("MEMCACHE_SRV", _set, "memcache is not implemented"),
    Unsupported("CONFIG_TYPE", lambda v: v.strip().upper() not in ("", "FILE"),
                "config comes from files only (--config or RUNTIME_ROOT); without one the "
                "embedded demo config is served"),
    Unsupported("REDIS_PERSECOND", _true, "per-second limits are counted in the one store"),
    Unsupported("REDIS_PERSECOND_URL", _set, "per-second limits are counted in the one store"),
    Unsupported("GRPC_SERVER_USE_TLS", _true, "the gRPC server has no TLS: run it beside "
                "Envoy (loopback or a Unix socket) or behind the mesh's mTLS"),
    Unsupported("EXPIRATION_JITTER_MAX_SECONDS", _set, "keys get their EXPIRE once, when "
                "created"),
    Unsupported("TRACING_ENABLED", _true, "use --otlp-endpoint or OTEL_EXPORTER_OTLP_ENDPOINT"),
    Unsupported("DEBUG_PORT", _set, "the debug endpoints are --admin-address"),
)


def unsupported(environ: Mapping[str, str]) -> list[tuple[str, str]]:
    """(variable=value, what to do instead) for each reference setting we do not honour."""
    found = []
    for setting in UNSUPPORTED:
        value = environ.get(setting.variable)
        if value is not None and setting.applies(value):
            found.append((f"{setting.variable}={value}", setting.instead))
    prometheus_path = environ.get("PROMETHEUS_PATH", "").strip()
    if prometheus_path not in ("", REFERENCE_PROMETHEUS_PATH):
        found.append((f"PROMETHEUS_PATH={prometheus_path}",
                      f"metrics are served on {REFERENCE_PROMETHEUS_PATH} only"))
    return found


def prometheus_address(environ: Mapping[str, str]) -> str:
    """The /metrics address the reference's USE_PROMETHEUS asks for, else empty.

    PROMETHEUS_ADDR keeps its form; `:9090` (the reference's default, every
    interface there) binds loopback here, as --metrics-address does: metrics leave
    the pod only when an address says so (`0.0.0.0:9090`)."""
    if not _true(environ.get("USE_PROMETHEUS", "")):
        return ""
    return environ.get("PROMETHEUS_ADDR", "").strip() or REFERENCE_PROMETHEUS_ADDR
