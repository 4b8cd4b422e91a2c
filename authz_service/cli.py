"""`authz-service`: serve Envoy ext_authz (gRPC and plain HTTP), or check a config and exit."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from authz_service.doors.grpc import AuthorizationService, service_spec
from authz_service.doors.http import DEFAULT_PATH_PREFIX, HttpCheckDoor
from authz_service.keys.registry import KeyRegistry
from authz_service.limits.stage import LimitCounter
from authz_service.metrics import CONFIG_LOADS, TOKEN_CACHE_ENTRIES, register_keys_held
from authz_service.pipeline import Pipeline
from authz_service.policy.compiled import CompiledPolicy
from authz_service.policy.loading import load_policy, watched_files
from ratelimit_service.reference_metrics import register_reference_metrics
from ratelimit_service.stores.factory import StoreSettings, build_store
from ratelimit_service.stores.target import TargetError
from tollgate.config import ConfigError
from tollgate.http_server import HttpLimits, HttpServer
from tollgate.logs import configure_logging
from tollgate.metrics import register_build_info, serve_metrics
from tollgate.reload import ConfigHolder, ConfigWatcher
from tollgate.server import GrpcApp, Listener, normalize_address, run, serve_until_signal
from tollgate.settings import flag
from tollgate.tracing import configure_tracing

DEFAULT_CONFIG = Path(__file__).parent / "defaults" / "authz.yaml"
OFF = "off"
log = logging.getLogger("authz")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="authz-service", description=__doc__)
    flag(p, "--config", env=["AUTHZ_CONFIG"], default=None,
         help="YAML config file (the embedded demo default when unset)")
    flag(p, "--check-config", env=["AUTHZ_CHECK_CONFIG"], default=None,
         help="validate this config file and exit (0 valid, 1 invalid)")
    flag(p, "--grpc-address", env=["AUTHZ_GRPC_ADDRESS"], default="127.0.0.1:9191",
         help="gRPC Check listen address, HOST:PORT or unix:PATH; 'off' disables it")
    flag(p, "--http-address", env=["AUTHZ_HTTP_ADDRESS"], default="127.0.0.1:9192",
         help="plain-HTTP check listen address (Envoy's http_service), HOST:PORT or "
              "unix:PATH; 'off' disables it")
    flag(p, "--http-path-prefix", env=["AUTHZ_HTTP_PATH_PREFIX"], default=DEFAULT_PATH_PREFIX,
         help="the http_service path_prefix Envoy puts before the client's path")
    flag(p, "--http-max-body-bytes", env=["AUTHZ_HTTP_MAX_BODY_BYTES"], default=1024 * 1024,
         kind=int, help="largest check request body the HTTP door reads (413 beyond)")
    flag(p, "--limits-redis-url", env=["AUTHZ_LIMITS_REDIS_URL"], default="",
         help="where the policy's rate limits are counted: redis://, rediss://, unix://, "
              "redis+sentinel://, redis+cluster:// (as ratelimit-service's --redis-url); "
              "empty: in memory (one replica)")
    flag(p, "--limits-redis-auth", env=["AUTHZ_LIMITS_REDIS_AUTH"], default="",
         help="Redis password or user:password for the rate limits")
    flag(p, "--limits-redis-tls", env=["AUTHZ_LIMITS_REDIS_TLS"], default=False, kind=bool,
         help="TLS to the rate limits' Redis")
    flag(p, "--limits-redis-timeout", env=["AUTHZ_LIMITS_REDIS_TIMEOUT"], default=0.25,
         kind=float, help="seconds to wait for the rate limits' Redis before the limit set's "
                          "on_store_failure applies (keep it under Envoy's ext_authz timeout)")
    flag(p, "--limits-key-prefix", env=["AUTHZ_LIMITS_KEY_PREFIX"], default="",
         help="prefix of every counter key (ratelimit-service's CACHE_KEY_PREFIX)")
    flag(p, "--limits-memory-max-keys", env=["AUTHZ_LIMITS_MEMORY_MAX_KEYS"],
         default=1_000_000, kind=int, help="bound on counters kept in memory")
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
    limits = ""
    if policy.limits is not None:
        sets = {s.name for r in policy.limits.by_route.values() for s in (*r.before, *r.after)}
        limits = f", {len(sets)} rate-limit sets"
    print(f"{path}: ok ({len(policy.sources)} identity sources, {routes} routes{limits})",
          file=out)
    return 0


def _limit_counter(args: argparse.Namespace) -> LimitCounter:
    settings = StoreSettings(
        url=args.limits_redis_url, auth=args.limits_redis_auth, tls=args.limits_redis_tls,
        timeout=args.limits_redis_timeout, memory_max_keys=args.limits_memory_max_keys,
    )
    store, _ = build_store(settings)
    return LimitCounter(store, key_prefix=args.limits_key_prefix)


async def serve(args: argparse.Namespace, counter: LimitCounter) -> None:
    config_path = Path(args.config) if args.config else DEFAULT_CONFIG
    keys = KeyRegistry()
    try:
        holder: ConfigHolder[CompiledPolicy] = ConfigHolder(load_policy(config_path, keys))
    except ConfigError as exc:
        log.error("invalid config", extra={"error": str(exc)})
        raise SystemExit(1) from None
    CONFIG_LOADS.loaded()
    watcher = ConfigWatcher(
        config_path, holder, lambda: load_policy(config_path, keys),
        interval=args.reload_interval, also_watch=watched_files, loads=CONFIG_LOADS,
    )
    TOKEN_CACHE_ENTRIES.set_function(lambda: len(holder.current.caches.tokens))
    register_keys_held(keys.keys_held)
    register_reference_metrics(counter.stats, CONFIG_LOADS)  # envoyproxy/ratelimit's names
    register_build_info("authz-service")
    serve_metrics(args.metrics_address)
    tracer = configure_tracing("authz-service", args.otlp_endpoint)
    pipeline = Pipeline(holder, keys, counter)
    app = None
    if args.grpc_address != OFF:
        # Health: "" and the service name say ready (every JWT source holds usable keys);
        # "liveness" only says the process answers.
        app = GrpcApp(args.grpc_address, [service_spec(AuthorizationService(pipeline, tracer))],
                      readiness=keys.readiness)
    listeners: list[Listener] = []
    draining = False

    def blockers() -> dict[str, str]:
        if draining:
            return {"draining": "the process is shutting down"}
        return keys.readiness.blockers()

    if args.http_address != OFF:
        door = HttpCheckDoor(pipeline, path_prefix=args.http_path_prefix, blockers=blockers,
                             tracer=tracer)
        listeners.append(HttpServer(args.http_address, door,
                                    HttpLimits(max_body_bytes=args.http_max_body_bytes)))

    def on_draining() -> None:
        nonlocal draining
        draining = True

    async def on_stop() -> None:
        await keys.close()
        await counter.store.close()

    log.info("config loaded", extra={"file": str(config_path)})
    try:
        await serve_until_signal(
            app,
            listeners=listeners,
            drain_seconds=args.drain_seconds,
            announce_seconds=args.drain_announce_seconds,
            background=[watcher.run, keys.run],
            on_reload_signal=watcher.request_reload,
            on_draining=on_draining,
            on_stop=on_stop,
        )
    except OSError as exc:  # the address cannot be bound
        log.error("cannot serve", extra={"error": str(exc)})
        raise SystemExit(1) from None


def main(argv: Sequence[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    for name, value in (("--grpc-address/AUTHZ_GRPC_ADDRESS", args.grpc_address),
                        ("--http-address/AUTHZ_HTTP_ADDRESS", args.http_address)):
        if value == OFF:
            continue
        try:
            normalize_address(value)
        except ValueError as exc:  # a usage error, not a traceback
            p.error(f"{name}: {exc}")
    if args.grpc_address == OFF and args.http_address == OFF:
        p.error("--grpc-address and --http-address are both off: nothing to serve")
    prefix = args.http_path_prefix
    if not prefix.startswith("/") or prefix.endswith("/"):
        p.error(f"--http-path-prefix '{prefix}' must start with '/' and not end with one")
    configure_logging(args.log_level, args.log_format)
    if args.check_config:
        return check_config(args.check_config, sys.stdout, sys.stderr)
    try:
        counter = _limit_counter(args)
    except TargetError as exc:
        p.error(f"--limits-redis-url: {exc}")
    run(lambda: serve(args, counter))
    return 0


if __name__ == "__main__":
    sys.exit(main())
