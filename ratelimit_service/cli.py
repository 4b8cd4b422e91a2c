"""`ratelimit-service`: serve ShouldRateLimit, or `--check-config PATH` and exit.

Every flag also reads environment variables: `RATELIMIT_*` names of our own and,
where envoyproxy/ratelimit has a setting for the same thing, its name too (see
docs/ratelimit.md for the mapping). Settings are read once, at start.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from typing import TextIO, cast

from ratelimit_service.admin import AdminServer
from ratelimit_service.config import load_rules
from ratelimit_service.defaults import DEFAULT_CONFIG, default_rules
from ratelimit_service.grpc_service import service_spec
from ratelimit_service.limiter import RateLimiter
from ratelimit_service.metrics import CONFIG_LOADS, register_stats
from ratelimit_service.readiness import Probed, StoreReadiness
from ratelimit_service.reference_env import unsupported
from ratelimit_service.rules import RuleSet
from ratelimit_service.settings import DEFAULT_ADDRESS, RateLimitSettings
from ratelimit_service.stores import factory
from ratelimit_service.stores.memory import DEFAULT_MAX_BYTES
from ratelimit_service.stores.target import StoreTarget
from tollgate.config import ConfigError
from tollgate.health import Readiness
from tollgate.health_http import HealthPage
from tollgate.http_server import HttpServer
from tollgate.logs import configure_logging
from tollgate.metrics import register_build_info, serve_metrics
from tollgate.reload import ConfigHolder, ConfigWatcher
from tollgate.server import GrpcApp, Listener, run, serve_until_signal
from tollgate.settings import SettingsError, flag, read_settings
from tollgate.tracing import configure_tracing
from tollgate.version import add_version
from tollgate.workers import port_for, run_workers, socket_path_for, worker_index

log = logging.getLogger("ratelimit_service")



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
    flag(p, "--redis-lease-hits", env=["RATELIMIT_REDIS_LEASE_HITS"], default=0, kind=int,
         help="reserve fixed-window hits on Redis in blocks of up to N (at most a tenth of a "
         "limit) and grant them here: one round trip per block instead of per request; "
         "never more than the limit, but near it some may be refused up to a block early "
         "(0: off, the reference's exact counting)")
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
         help="debug, info, warning, error (also trace, warn, fatal, panic, the reference's)")
    flag(p, "--log-format", env=["RATELIMIT_LOG_FORMAT", "LOG_FORMAT"], default="json",
         help="json or text")
    return p


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


def parse_settings(argv: Sequence[str] | None = None) -> RateLimitSettings:
    """The flags (and their environment variables), checked: a usage error exits 2."""
    parser = build_parser()
    return read_settings(parser, RateLimitSettings.from_args, parser.parse_args(argv))


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.check_config:  # the rules alone: what serving would need is not read
        return _check(args.check_config, sys.stdout, sys.stderr, args.merge_domain_config,
                      args.allow_empty_config)
    settings = read_settings(parser, RateLimitSettings.from_args, args)
    source, common = settings.rules, settings.common
    configure_logging(common.log_level, common.log_format)
    for setting, instead in unsupported(os.environ):
        log.warning("reference setting not implemented, ignored",
                    extra={"setting": setting, "instead": instead})
    try:
        tls = common.server_tls()
    except SettingsError as exc:
        parser.error(str(exc))
    config_path = source.path
    merge, allow_empty = source.merge_domains, source.allow_empty
    try:
        rules = (load_rules(config_path, merge_domains=merge, allow_empty=allow_empty)
                 if config_path else default_rules())
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    CONFIG_LOADS.loaded()
    store, target = factory.build_store(settings.store)
    address, worker = settings.address, worker_index()
    if settings.workers > 1 and worker is None:
        return _supervise(settings, target, argv)
    if worker is not None:
        address = socket_path_for(address, worker)
    holder: ConfigHolder[RuleSet] = ConfigHolder(rules)
    limiter = RateLimiter(holder, store, settings.decision, failure_mode=settings.failure_mode)
    register_stats(limiter.stats)
    register_build_info("ratelimit-service")
    serve_metrics(port_for(common.metrics_address, worker))
    tracer = configure_tracing("ratelimit-service", common.otlp_endpoint)

    async def serve() -> None:
        background = []
        watcher: ConfigWatcher[RuleSet] | None = None
        if config_path:
            path = config_path
            watcher = ConfigWatcher(
                path, holder,
                lambda: load_rules(path, merge_domains=merge, allow_empty=allow_empty),
                interval=common.reload_interval, loads=CONFIG_LOADS,
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
                failure_mode=settings.failure_mode,
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

        if settings.health_address:
            listeners.append(HttpServer(port_for(settings.health_address, worker),
                                        HealthPage(blockers)))
        admin = None
        if settings.admin_address:
            admin = AdminServer(settings.admin_address, limiter,
                                allow_remote=settings.admin_allow_remote,
                                reuse_port=worker is not None)
            await admin.start()

        async def stop() -> None:
            if admin is not None:
                await admin.stop()
            await store.close()

        await serve_until_signal(
            app,
            drain_seconds=common.drain_seconds,
            announce_seconds=common.drain_announce_seconds,
            listeners=listeners,
            background=background,
            on_reload_signal=watcher.request_reload if watcher is not None else None,
            on_draining=on_draining,
            on_stop=stop,
        )

    run(serve)
    return 0


def _supervise(settings: RateLimitSettings, target: StoreTarget,
               argv: Sequence[str] | None) -> int:
    """--workers N: the checks that need every worker, then the supervisor."""
    workers, address = settings.workers, settings.address
    if target.kind == "memory":
        build_parser().error(
            f"--workers {workers} needs a shared store: the memory store counts in each "
            "process, so every limit would be multiplied by the workers (use --redis-url, "
            "or --workers 1)")
    if not address.startswith("unix:") and address.rpartition(":")[2] == "0":
        build_parser().error("--workers needs a fixed port: with port 0 each worker would "
                             "get its own")
    log.info("starting workers", extra={"workers": workers, "address": address})
    return run_workers(workers, "ratelimit_service.cli",
                       list(sys.argv[1:] if argv is None else argv),
                       drain_seconds=settings.common.drain_seconds)


if __name__ == "__main__":
    sys.exit(main())
