"""`authz-service`: serve Envoy ext_authz, or check a config file and exit."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from authz_service.compiled import CompiledPolicy
from authz_service.grpc_service import AuthorizationService, load_policy, service_spec
from authz_service.key_registry import KeyRegistry
from authz_service.metrics import TOKEN_CACHE_ENTRIES
from tollgate.config import ConfigError
from tollgate.logs import configure_logging
from tollgate.metrics import serve_metrics
from tollgate.reload import ConfigHolder, ConfigWatcher
from tollgate.server import GrpcApp, normalize_address, run, serve_until_signal
from tollgate.settings import flag
from tollgate.tracing import configure_tracing

DEFAULT_CONFIG = Path(__file__).parent / "defaults" / "authz.yaml"
log = logging.getLogger("authz")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="authz-service", description=__doc__)
    flag(p, "--config", env=["AUTHZ_CONFIG"], default=None,
         help="YAML config file (the embedded demo default when unset)")
    flag(p, "--check-config", env=["AUTHZ_CHECK_CONFIG"], default=None,
         help="validate this config file and exit (0 valid, 1 invalid)")
    flag(p, "--grpc-address", env=["AUTHZ_GRPC_ADDRESS"], default="127.0.0.1:9191",
         help="listen address, HOST:PORT or unix:PATH")
    flag(p, "--reload-interval", env=["AUTHZ_RELOAD_INTERVAL"], default=1.0, kind=float,
         help="seconds between config file checks")
    flag(p, "--drain-seconds", env=["AUTHZ_DRAIN_SECONDS"], default=10.0, kind=float,
         help="grace period for in-flight checks on SIGTERM")
    flag(p, "--metrics-address", env=["AUTHZ_METRICS_ADDRESS"], default="",
         help="serve Prometheus /metrics on HOST:PORT (off when empty)")
    flag(p, "--otlp-endpoint", env=["AUTHZ_OTLP_ENDPOINT"], default="",
         help="OTLP/gRPC trace endpoint (also OTEL_EXPORTER_OTLP_ENDPOINT); off when empty")
    flag(p, "--drain-announce-seconds", env=["AUTHZ_DRAIN_ANNOUNCE_SECONDS"], default=1.0,
         kind=float, help="part of the grace period spent still answering, health "
         "NOT_SERVING, so probes and Envoy see it before new RPCs are refused")
    flag(p, "--log-level", env=["AUTHZ_LOG_LEVEL", "LOG_LEVEL"], default="info",
         choices=["debug", "info", "warning", "error"], help="log level")
    flag(p, "--log-format", env=["AUTHZ_LOG_FORMAT", "LOG_FORMAT"], default="json",
         choices=["json", "text"], help="log format")
    return p


def check_config(path: str, out: TextIO, err: TextIO) -> int:
    """Validate and compile `path` (fetching nothing); print the first error's location."""
    try:
        policy = load_policy(path, KeyRegistry())
    except ConfigError as exc:
        print(str(exc), file=err)
        return 1
    routes = len(policy.routes)
    print(f"{path}: ok ({len(policy.sources)} identity sources, {routes} routes)", file=out)
    return 0


async def serve(args: argparse.Namespace) -> None:
    config_path = Path(args.config) if args.config else DEFAULT_CONFIG
    keys = KeyRegistry()
    try:
        holder: ConfigHolder[CompiledPolicy] = ConfigHolder(load_policy(config_path, keys))
    except ConfigError as exc:
        log.error("invalid config", extra={"error": str(exc)})
        raise SystemExit(1) from None
    watcher = ConfigWatcher(
        config_path, holder, lambda: load_policy(config_path, keys), interval=args.reload_interval
    )
    TOKEN_CACHE_ENTRIES.set_function(lambda: len(holder.current.token_cache))
    serve_metrics(args.metrics_address)
    tracer = configure_tracing("authz-service", args.otlp_endpoint)
    service = AuthorizationService(holder, keys, tracer=tracer)
    # Health: "" and the service name say ready (every JWT source holds usable keys);
    # "liveness" only says the process answers.
    app = GrpcApp(args.grpc_address, [service_spec(service)], readiness=keys.readiness)
    log.info("config loaded", extra={"file": str(config_path)})
    try:
        await serve_until_signal(
            app,
            drain_seconds=args.drain_seconds,
            announce_seconds=args.drain_announce_seconds,
            background=[watcher.run, keys.run],
            on_reload_signal=watcher.request_reload,
            on_stop=keys.close,
        )
    except OSError as exc:  # the address cannot be bound
        log.error("cannot serve", extra={"error": str(exc)})
        raise SystemExit(1) from None


def main(argv: Sequence[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    try:
        normalize_address(args.grpc_address)
    except ValueError as exc:  # a usage error, not a traceback
        p.error(f"--grpc-address/AUTHZ_GRPC_ADDRESS: {exc}")
    configure_logging(args.log_level, args.log_format)
    if args.check_config:
        return check_config(args.check_config, sys.stdout, sys.stderr)
    run(lambda: serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
