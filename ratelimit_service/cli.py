"""`ratelimit-service`: serve ShouldRateLimit, or `--check-config PATH` and exit.

Every flag also reads environment variables: `RATELIMIT_*` names of our own and,
where envoyproxy/ratelimit has a setting for the same thing, its name too (see
docs/ratelimit.md for the mapping). Settings are read once, at start.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO, cast

from ratelimit_service.admin import AdminServer, admin_address
from ratelimit_service.config import load_rules
from ratelimit_service.decision import DecisionSettings, HeaderNames
from ratelimit_service.defaults import DEFAULT_CONFIG, default_rules
from ratelimit_service.grpc_service import service_spec
from ratelimit_service.limiter import FailureMode, RateLimiter
from ratelimit_service.metrics import CONFIG_LOADS, register_stats
from ratelimit_service.readiness import Probed, StoreReadiness
from ratelimit_service.reference_env import prometheus_address, unsupported
from ratelimit_service.rules import RuleSet
from ratelimit_service.stores import CounterStore, factory
from ratelimit_service.stores.memory import DEFAULT_MAX_BYTES
from ratelimit_service.stores.target import StoreTarget, TargetError
from tollgate.config import ConfigError
from tollgate.health import Readiness
from tollgate.health_http import HealthPage
from tollgate.http_server import HttpServer
from tollgate.logs import configure_logging
from tollgate.metrics import register_build_info, serve_metrics
from tollgate.reload import ConfigHolder, ConfigWatcher
from tollgate.server import GrpcApp, Listener, normalize_address, run, serve_until_signal
from tollgate.settings import flag
from tollgate.tls import ServerTls, TlsError, TlsFiles
from tollgate.tracing import configure_tracing
from tollgate.version import add_version
from tollgate.workers import port_for, run_workers, socket_path_for, worker_index

log = logging.getLogger("ratelimit_service")

DEFAULT_ADDRESS = "127.0.0.1:8081"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ratelimit-service", description=__doc__)
    add_version(p)
    flag(p, "--config", env=["RATELIMIT_CONFIG"],
         help="YAML file or directory of them (one domain per file); "
              "default: $RUNTIME_ROOT/$RUNTIME_SUBDIRECTORY/config if set, "
              "else the embedded default")
    flag(p, "--merge-domain-config",
         env=["RATELIMIT_MERGE_DOMAIN_CONFIG", "MERGE_DOMAIN_CONFIG"], default=False, kind=bool,
         help="files naming the same domain are merged instead of rejected")
    p.add_argument("--check-config", metavar="PATH",
                   help="validate PATH (file or directory) and exit")
    flag(p, "--allow-empty-config", env=["RATELIMIT_ALLOW_EMPTY_CONFIG"], default=False,
         kind=bool, help="accept a config directory with no *.yaml file (no limits at all)")
    flag(p, "--grpc-address", env=["RATELIMIT_GRPC_ADDRESS"],
         help=f"HOST:PORT or unix:PATH (also GRPC_UDS, GRPC_HOST + GRPC_PORT); "
              f"default {DEFAULT_ADDRESS}")
    # envoyproxy/ratelimit's GRPC_SERVER_TLS_* names too (a certificate turns TLS on).
    flag(p, "--tls-cert", env=["RATELIMIT_TLS_CERT", "GRPC_SERVER_TLS_CERT"], default="",
         help="serve gRPC over TLS with this certificate chain (PEM); reloaded when it "
              "changes")
    flag(p, "--tls-key", env=["RATELIMIT_TLS_KEY", "GRPC_SERVER_TLS_KEY"], default="",
         help="the TLS certificate's private key (PEM)")
    flag(p, "--tls-client-ca", env=["RATELIMIT_TLS_CLIENT_CA", "GRPC_CLIENT_TLS_CACERT"],
         default="", help="mTLS: require a client certificate issued by this CA (PEM)")
    flag(p, "--redis-url", env=["RATELIMIT_REDIS_URL", "REDIS_URL"], default="",
         help="redis://, rediss://, unix://, redis+sentinel://, redis+cluster:// or the "
              "reference's bare forms; empty: in-memory store")
    flag(p, "--redis-type", env=["RATELIMIT_REDIS_TYPE", "REDIS_TYPE"], default="single",
         help="how to read a bare --redis-url: single, sentinel or cluster")
    flag(p, "--redis-socket-type", env=["RATELIMIT_REDIS_SOCKET_TYPE", "REDIS_SOCKET_TYPE"],
         default="tcp", help="tcp or unix, for a bare single --redis-url")
    flag(p, "--redis-auth", env=["RATELIMIT_REDIS_AUTH", "REDIS_AUTH"], default="",
         help="password, user:password, or :password for a password containing ':'")
    flag(p, "--redis-username", env=["RATELIMIT_REDIS_USERNAME"], default="",
         help="Redis ACL user; when set, --redis-auth is the whole password")
    flag(p, "--redis-tls", env=["RATELIMIT_REDIS_TLS", "REDIS_TLS"], default=False, kind=bool,
         help="TLS to Redis")
    flag(p, "--redis-tls-ca-file", env=["RATELIMIT_REDIS_TLS_CA_FILE", "REDIS_TLS_CACERT"],
         default="", help="CA file to verify the Redis server's certificate (rediss://); "
         "default: the system's CAs")
    flag(p, "--redis-pipeline-window",
         env=["RATELIMIT_REDIS_PIPELINE_WINDOW", "REDIS_PIPELINE_WINDOW"], default="0",
         help="under load, how long a request may wait for others to share its Redis call "
              "(e.g. 500us, 1ms; 0: never waits)")
    flag(p, "--redis-pipeline-limit",
         env=["RATELIMIT_REDIS_PIPELINE_LIMIT", "REDIS_PIPELINE_LIMIT"], default=512, kind=int,
         help="counters per Redis call at most (0: 512)")
    flag(p, "--redis-timeout", env=["RATELIMIT_REDIS_TIMEOUT"], default=1.0, kind=float,
         help="seconds to connect to / wait for Redis before the store counts as down")
    flag(p, "--store-failure-mode", env=["RATELIMIT_STORE_FAILURE_MODE"], default="open",
         choices=["open", "closed"],
         help="store down: open = answer OK (logged, counted); closed = gRPC UNAVAILABLE")
    flag(p, "--local-cache-size-bytes",
         env=["RATELIMIT_LOCAL_CACHE_SIZE_BYTES", "LOCAL_CACHE_SIZE_IN_BYTES"],
         default=1_048_576, kind=int,
         help="memory for the Redis stores' cache of over-limit keys; 0 disables it")
    flag(p, "--stop-cache-key-increment-when-overlimit",
         env=["RATELIMIT_STOP_INCREMENT_WHEN_OVERLIMIT", "STOP_CACHE_KEY_INCREMENT_WHEN_OVERLIMIT"],
         default=False, kind=bool,
         help="a request over one fixed-window limit does not use up its other limits")
    flag(p, "--memory-max-keys", env=["RATELIMIT_MEMORY_MAX_KEYS"], default=1_000_000,
         kind=int, help="bound on counters kept by the in-memory store")
    flag(p, "--memory-max-bytes", env=["RATELIMIT_MEMORY_MAX_BYTES"], default=DEFAULT_MAX_BYTES,
         kind=int, help="bound on the memory the in-memory store's counters take")
    flag(p, "--near-limit-ratio", env=["RATELIMIT_NEAR_LIMIT_RATIO", "NEAR_LIMIT_RATIO"],
         default=0.8, kind=float, help="fraction of a limit counted as near the limit")
    flag(p, "--cache-key-prefix", env=["RATELIMIT_CACHE_KEY_PREFIX", "CACHE_KEY_PREFIX"],
         default="", help="prefix of every counter key")
    flag(p, "--shadow-mode", env=["RATELIMIT_SHADOW_MODE", "SHADOW_MODE"], default=False,
         kind=bool, help="always answer OK, still counting and reporting")
    flag(p, "--quota-mode", env=["RATELIMIT_QUOTA_MODE", "QUOTA_MODE"], default=False,
         kind=bool, help="treat every limit as a quota")
    flag(p, "--response-headers",
         env=["RATELIMIT_RESPONSE_HEADERS", "LIMIT_RESPONSE_HEADERS_ENABLED",
              "RESPONSE_HEADERS_ENABLED"],
         default=False, kind=bool, help="add X-RateLimit-Limit/Remaining/Reset headers")
    flag(p, "--response-dynamic-metadata",
         env=["RATELIMIT_RESPONSE_DYNAMIC_METADATA", "RESPONSE_DYNAMIC_METADATA"],
         default=False, kind=bool,
         help="put the request and the passed limits' config metadata in dynamic_metadata")
    flag(p, "--header-limit", env=["RATELIMIT_HEADER_LIMIT", "LIMIT_LIMIT_HEADER"],
         default="X-RateLimit-Limit", help="name of the limit header")
    flag(p, "--header-remaining", env=["RATELIMIT_HEADER_REMAINING", "LIMIT_REMAINING_HEADER"],
         default="X-RateLimit-Remaining", help="name of the remaining header")
    flag(p, "--header-reset", env=["RATELIMIT_HEADER_RESET", "LIMIT_RESET_HEADER"],
         default="X-RateLimit-Reset", help="name of the reset header")
    flag(p, "--workers", env=["RATELIMIT_WORKERS"], default=1, kind=int,
         help="worker processes on one address (SO_REUSEPORT; unix:PATH -> PATH, PATH.1, ...); "
              "needs a Redis store")
    flag(p, "--reload-interval", env=["RATELIMIT_RELOAD_INTERVAL"], default=1.0, kind=float,
         help="seconds between config change checks")
    flag(p, "--drain-seconds", env=["RATELIMIT_DRAIN_SECONDS"], default=5.0, kind=float,
         help="grace for in-flight requests on SIGTERM")
    flag(p, "--drain-announce-seconds", env=["RATELIMIT_DRAIN_ANNOUNCE_SECONDS"], default=1.0,
         kind=float, help="part of the drain spent still answering, health NOT_SERVING, so "
         "probes and Envoy see it before new RPCs are refused")
    flag(p, "--admin-address", env=["RATELIMIT_ADMIN_ADDRESS"], default="",
         help="serve the admin API (read and reset counters) on HOST:PORT, or PORT for "
              "127.0.0.1:PORT; off when empty")
    flag(p, "--admin-allow-remote", env=["RATELIMIT_ADMIN_ALLOW_REMOTE"], default=False,
         kind=bool, help="let non-loopback peers use the admin API (refused by default)")
    flag(p, "--metrics-address", env=["RATELIMIT_METRICS_ADDRESS"], default="",
         help="serve Prometheus /metrics on HOST:PORT (off when empty)")
    flag(p, "--health-address", env=["RATELIMIT_HEALTH_ADDRESS"], default="",
         help="serve HTTP /healthcheck (the reference's: 200 OK or 500), /healthz and /ready "
              "on HOST:PORT; off when empty, unless the reference's PORT (and HOST) is set")
    flag(p, "--otlp-endpoint", env=["RATELIMIT_OTLP_ENDPOINT"], default="",
         help="OTLP/gRPC trace endpoint (also OTEL_EXPORTER_OTLP_ENDPOINT); off when empty")
    flag(p, "--log-level", env=["RATELIMIT_LOG_LEVEL", "LOG_LEVEL"], default="info",
         help="debug, info, warning, error")
    flag(p, "--log-format", env=["RATELIMIT_LOG_FORMAT", "LOG_FORMAT"], default="json",
         help="json or text")
    return p


def resolve_address(explicit: str | None, environ: dict[str, str] | None = None) -> str:
    """--grpc-address, else the reference's GRPC_UDS / GRPC_HOST + GRPC_PORT, else default."""
    env = os.environ if environ is None else environ
    if explicit:
        return normalize_address(explicit)
    if env.get("GRPC_UDS"):
        return normalize_address(f"unix:{env['GRPC_UDS']}")
    if env.get("GRPC_HOST") or env.get("GRPC_PORT"):
        host = env.get("GRPC_HOST") or "127.0.0.1"
        return normalize_address(f"{host}:{env.get('GRPC_PORT') or '8081'}")
    return DEFAULT_ADDRESS


def resolve_health_address(explicit: str, environ: dict[str, str] | None = None) -> str:
    """--health-address, else the reference's HOST (default every interface) + PORT, else
    off. The reference always serves its HTTP port (8080); a sidecar here opens it only
    when asked, so it never takes a port the application in the pod uses."""
    env = os.environ if environ is None else environ
    if explicit:
        return normalize_address(explicit)
    if env.get("PORT"):
        host = env.get("HOST") or "0.0.0.0"  # noqa: S104 - the reference's default, for probes
        return normalize_address(f"{host}:{env['PORT']}")
    return ""


def resolve_metrics_address(explicit: str, environ: dict[str, str] | None = None) -> str:
    """--metrics-address, else the reference's USE_PROMETHEUS + PROMETHEUS_ADDR."""
    return explicit or prometheus_address(os.environ if environ is None else environ)


def resolve_config_path(explicit: str | None, environ: dict[str, str] | None = None) -> str | None:
    """--config, else the reference's RUNTIME_ROOT/RUNTIME_SUBDIRECTORY/RUNTIME_APPDIRECTORY."""
    env = os.environ if environ is None else environ
    if explicit:
        return explicit
    root = env.get("RUNTIME_ROOT")
    if root:
        return str(Path(root, env.get("RUNTIME_SUBDIRECTORY", ""),
                        env.get("RUNTIME_APPDIRECTORY") or "config"))
    return None


def check_config(path: str, out: TextIO, err: TextIO) -> int:
    """Validate a config file or directory; print `file:line: reason` to err on failure.

    (`tollgate check-config ratelimit` calls this; MERGE_DOMAIN_CONFIG comes from the
    environment, as for the service.)
    """
    defaults = build_parser().parse_args([])
    return _check(path, out, err, bool(defaults.merge_domain_config),
                  bool(defaults.allow_empty_config))


def _check(path: str, out: TextIO, err: TextIO, merge_domains: bool, allow_empty: bool) -> int:
    try:
        rules = load_rules(path, merge_domains=merge_domains, allow_empty=allow_empty)
    except ConfigError as exc:
        print(str(exc), file=err)
        return 1
    names = ", ".join(sorted(rules.domains)) or "none"
    print(f"{path}: ok (domains: {names})", file=out)
    return 0


def build_store(args: argparse.Namespace) -> tuple[CounterStore, StoreTarget]:
    """The counter store the flags select (clients connect lazily, on first use)."""
    return factory.build_store(store_settings(args))


def store_settings(args: argparse.Namespace) -> factory.StoreSettings:
    return factory.StoreSettings(
        url=args.redis_url, redis_type=args.redis_type, socket_type=args.redis_socket_type,
        auth=args.redis_auth, tls=args.redis_tls, timeout=args.redis_timeout,
        local_cache_bytes=args.local_cache_size_bytes,
        memory_max_keys=args.memory_max_keys,
        stop_when_over=args.stop_cache_key_increment_when_overlimit,
        memory_max_bytes=args.memory_max_bytes, tls_ca_file=args.redis_tls_ca_file,
        username=args.redis_username,
        pipeline_window=duration(args.redis_pipeline_window),
        pipeline_limit=args.redis_pipeline_limit,
    )


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ns|us|µs|ms|s)?\s*$")
_SCALE = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, None: 1.0}


def duration(text: str) -> float:
    """Seconds from `150us`, `1ms`, `0.5s` or a bare number of seconds (as the
    reference's Go durations read); ValueError otherwise."""
    found = _DURATION.match(text)
    if found is None:
        raise ValueError(f"'{text}' is not a duration such as 500us, 1ms or 0")
    return float(found.group(1)) * _SCALE[found.group(2)]


def settings_from(args: argparse.Namespace) -> DecisionSettings:
    headers = None
    if args.response_headers:
        headers = HeaderNames(args.header_limit, args.header_remaining, args.header_reset)
    return DecisionSettings(
        near_limit_ratio=args.near_limit_ratio,
        shadow_mode=args.shadow_mode,
        quota_mode=args.quota_mode,
        headers=headers,
        key_prefix=args.cache_key_prefix,
        dynamic_metadata=args.response_dynamic_metadata,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.check_config:
        return _check(args.check_config, sys.stdout, sys.stderr, args.merge_domain_config,
                      args.allow_empty_config)
    configure_logging(args.log_level, args.log_format)
    try:
        address = resolve_address(args.grpc_address)
        health_address = resolve_health_address(args.health_address)
    except ValueError as exc:
        parser.error(str(exc))
    for setting, instead in unsupported(os.environ):
        log.warning("reference setting not implemented, ignored",
                    extra={"setting": setting, "instead": instead})
    if not 0.0 <= args.near_limit_ratio <= 1.0:
        parser.error("--near-limit-ratio must be between 0 and 1")
    if (args.memory_max_keys < 1 or args.memory_max_bytes < 1 or args.redis_timeout <= 0
            or args.local_cache_size_bytes < 0 or args.workers < 1):
        parser.error("--memory-max-keys >= 1, --memory-max-bytes >= 1, --redis-timeout > 0, "
                     "--local-cache-size-bytes >= 0 and --workers >= 1 are required")
    try:
        if args.admin_address:
            admin_address(args.admin_address)
        if duration(args.redis_pipeline_window) > 1.0 or args.redis_pipeline_limit < 0:
            parser.error("--redis-pipeline-window must be at most 1 s and "
                         "--redis-pipeline-limit at least 0")
    except ValueError as exc:
        parser.error(str(exc))
    if args.redis_tls_ca_file and not Path(args.redis_tls_ca_file).is_file():
        parser.error(f"--redis-tls-ca-file {args.redis_tls_ca_file}: no such file")
    try:
        tls_files = TlsFiles.from_flags(args.tls_cert, args.tls_key, args.tls_client_ca)
        tls = ServerTls(tls_files, interval=args.reload_interval) if tls_files else None
    except TlsError as exc:
        parser.error(f"--tls-cert/--tls-key/--tls-client-ca: {exc}")
    config_path = resolve_config_path(args.config)
    merge, allow_empty = args.merge_domain_config, args.allow_empty_config
    try:
        rules = (load_rules(config_path, merge_domains=merge, allow_empty=allow_empty)
                 if config_path else default_rules())
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    CONFIG_LOADS.loaded()
    try:
        store, target = build_store(args)
    except TargetError as exc:
        parser.error(str(exc))
    worker = worker_index()
    if args.workers > 1 and worker is None:
        return _supervise(parser, args, address, target, argv)
    if worker is not None:
        address = socket_path_for(address, worker)
    holder: ConfigHolder[RuleSet] = ConfigHolder(rules)
    limiter = RateLimiter(
        holder, store, settings_from(args), failure_mode=FailureMode(args.store_failure_mode)
    )
    register_stats(limiter.stats)
    register_build_info("ratelimit-service")
    serve_metrics(port_for(resolve_metrics_address(args.metrics_address), worker))
    tracer = configure_tracing("ratelimit-service", args.otlp_endpoint)

    async def serve() -> None:
        background = []
        watcher: ConfigWatcher[RuleSet] | None = None
        if config_path:
            path = config_path
            watcher = ConfigWatcher(
                path, holder,
                lambda: load_rules(path, merge_domains=merge, allow_empty=allow_empty),
                interval=args.reload_interval, loads=CONFIG_LOADS,
            )
            background.append(watcher.run)
        log.info(
            "starting",
            extra={"config": config_path or f"<embedded> {DEFAULT_CONFIG}", "store": target.kind,
                   "domains": sorted(rules.domains), "worker": worker, "pid": os.getpid()},
        )
        # A Redis store must answer before health says SERVING (readiness.py).
        readiness = Readiness()
        if target.kind != "memory":
            probe = StoreReadiness(
                cast(Probed, store), readiness,  # both Redis stores can ping
                failure_mode=FailureMode(args.store_failure_mode),
            )
            probe.block_until_probed()
            background.append(probe.run)
        app = GrpcApp(address, [service_spec(limiter, tracer)], readiness=readiness,
                      reuse_port=worker is not None, tls=tls)
        if tls is not None:
            background.append(tls.run)
        listeners: list[Listener] = []
        draining = False

        def blockers() -> dict[str, str]:
            if draining:
                return {"draining": "the process is shutting down"}
            return readiness.blockers()

        def on_draining() -> None:
            nonlocal draining
            draining = True

        if health_address:
            listeners.append(HttpServer(port_for(health_address, worker), HealthPage(blockers)))
        admin = None
        if args.admin_address:
            admin = AdminServer(args.admin_address, limiter,
                                allow_remote=args.admin_allow_remote,
                                reuse_port=worker is not None)
            await admin.start()

        async def stop() -> None:
            if admin is not None:
                await admin.stop()
            await store.close()

        await serve_until_signal(
            app,
            drain_seconds=args.drain_seconds,
            announce_seconds=args.drain_announce_seconds,
            listeners=listeners,
            background=background,
            on_reload_signal=watcher.request_reload if watcher is not None else None,
            on_draining=on_draining,
            on_stop=stop,
        )

    run(serve)
    return 0


def _supervise(
    parser: argparse.ArgumentParser, args: argparse.Namespace, address: str,
    target: StoreTarget, argv: Sequence[str] | None,
) -> int:
    """--workers N: the checks that need every worker, then the supervisor."""
    if target.kind == "memory":
        parser.error(f"--workers {args.workers} needs a shared store: the memory store counts "
                     "in each process, so every limit would be multiplied by the workers "
                     "(use --redis-url, or --workers 1)")
    if not address.startswith("unix:") and address.rpartition(":")[2] == "0":
        parser.error("--workers needs a fixed port: with port 0 each worker would get its own")
    log.info("starting workers", extra={"workers": args.workers, "address": address})
    return run_workers(args.workers, "ratelimit_service.cli",
                       list(sys.argv[1:] if argv is None else argv),
                       drain_seconds=args.drain_seconds)


if __name__ == "__main__":
    sys.exit(main())
