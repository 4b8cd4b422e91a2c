"""`authz-service`: serve Envoy ext_authz (gRPC and plain HTTP), or check a config and exit."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from authz_service.decision_log import DecisionLog
from authz_service.doors.forwarded import CONVENTIONS
from authz_service.doors.grpc import AuthorizationService, service_spec
from authz_service.doors.http import DEFAULT_PATH_PREFIX, HttpCheckDoor
from authz_service.identity.dpop_replay import MemoryReplayStore, RedisReplayStore, ReplayStore
from authz_service.keys.registry import KeyRegistry
from authz_service.limits.stage import LimitCounter
from authz_service.metrics import (
    CONFIG_LOADS,
    DECISION_LOG_DROPPED,
    TOKEN_CACHE_ENTRIES,
    register_keys_held,
)
from authz_service.pipeline import Pipeline
from authz_service.policy.compiled import CompiledPolicy
from authz_service.policy.loading import load_policy, watched_files
from authz_service.settings import (
    OFF,
    AuthzSettings,
    DecisionLogOutput,
    LimitStoreSettings,
    ReplaySettings,
)
from ratelimit_service.reference_metrics import register_reference_metrics
from ratelimit_service.stores.factory import build_store
from tollgate.config import ConfigError, ConfigNote
from tollgate.http_server import HttpLimits, HttpServer
from tollgate.logs import configure_logging
from tollgate.metrics import register_build_info, serve_metrics
from tollgate.record_log import JsonLinesSink, RecordSink
from tollgate.reload import ConfigHolder, ConfigWatcher
from tollgate.server import GrpcApp, Listener, run, serve_until_signal
from tollgate.settings import LOG_LEVELS, SettingsError, flag, read_settings
from tollgate.tls import ServerTls
from tollgate.tracing import configure_tracing
from tollgate.version import add_version

log = logging.getLogger("authz")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="authz-service", description=__doc__)
    add_version(p)
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
    flag(p, "--http-forwarded", env=["AUTHZ_HTTP_FORWARDED"], default=OFF,
         choices=[OFF, *CONVENTIONS],
         help="the HTTP door takes checks from NGINX auth_request (nginx: X-Original-Method/"
              "-URI) or Traefik forwardAuth (traefik, generic: X-Forwarded-Method/-Uri), "
              "not from Envoy (off); needs --http-trusted-forwarders")
    flag(p, "--http-trusted-forwarders", env=["AUTHZ_HTTP_TRUSTED_FORWARDERS"], default="",
         help="CIDR,... (and 'unix' for the door's Unix socket): the only TCP peers whose "
              "forwarded headers are believed; any other peer is refused")
    flag(p, "--http-max-body-bytes", env=["AUTHZ_HTTP_MAX_BODY_BYTES"], default=1024 * 1024,
         kind=int, help="largest check request body the HTTP door reads (413 beyond)")
    flag(p, "--tls-cert", env=["AUTHZ_TLS_CERT"], default="",
         help="serve both doors over TLS with this certificate chain (PEM); reloaded when "
              "it changes")
    flag(p, "--tls-key", env=["AUTHZ_TLS_KEY"], default="",
         help="the TLS certificate's private key (PEM)")
    flag(p, "--tls-client-ca", env=["AUTHZ_TLS_CLIENT_CA"], default="",
         help="mTLS: require a client certificate issued by this CA (PEM), e.g. Envoy's")
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
                          "store_failure_mode applies (keep it under Envoy's ext_authz timeout)")
    flag(p, "--limits-redis-username", env=["AUTHZ_LIMITS_REDIS_USERNAME"], default="",
         help="Redis ACL user for the rate limits; when set, --limits-redis-auth is the "
              "whole password")
    flag(p, "--limits-redis-tls-ca-file", env=["AUTHZ_LIMITS_REDIS_TLS_CA_FILE"], default="",
         help="CA file to verify the rate limits' Redis (rediss://); default: the system's")
    flag(p, "--limits-redis-pipeline-window", env=["AUTHZ_LIMITS_REDIS_PIPELINE_WINDOW"],
         default="0", help="under load, how long a check may wait for others to share its "
         "Redis call (e.g. 500us, 1ms; 0: never waits; concurrent checks share one anyway)")
    flag(p, "--limits-redis-pipeline-limit", env=["AUTHZ_LIMITS_REDIS_PIPELINE_LIMIT"],
         default=512, kind=int, help="counters per Redis call at most (0: 512)")
    flag(p, "--limits-redis-lease-hits", env=["AUTHZ_LIMITS_REDIS_LEASE_HITS"], default=0,
         kind=int, help="reserve fixed-window hits on Redis in blocks of up to N (at most a "
         "tenth of a limit) and grant them here: one round trip per block instead of per "
         "check; never more than the limit, but near it some may be refused up to a block "
         "early (0: off)")
    flag(p, "--limits-key-prefix", env=["AUTHZ_LIMITS_KEY_PREFIX"], default="",
         help="prefix of every counter key (ratelimit-service's CACHE_KEY_PREFIX)")
    flag(p, "--limits-memory-max-keys", env=["AUTHZ_LIMITS_MEMORY_MAX_KEYS"],
         default=1_000_000, kind=int, help="bound on counters kept in memory")
    flag(p, "--dpop-replay-redis-url", env=["AUTHZ_DPOP_REPLAY_REDIS_URL"], default="",
         help="where spent DPoP proofs (jti) are remembered when replicas share the work: "
              "redis://, rediss://, unix://; empty: in memory (one replica)")
    flag(p, "--dpop-replay-redis-timeout", env=["AUTHZ_DPOP_REPLAY_REDIS_TIMEOUT"],
         default=0.25, kind=float, help="seconds to wait for that Redis before the proof is "
         "refused with 503 (keep it under Envoy's ext_authz timeout)")
    flag(p, "--dpop-replay-key-prefix", env=["AUTHZ_DPOP_REPLAY_KEY_PREFIX"], default="",
         help="prefix of every DPoP replay key in Redis")
    flag(p, "--dpop-replay-memory-max-entries", env=["AUTHZ_DPOP_REPLAY_MEMORY_MAX_ENTRIES"],
         default=1_000_000, kind=int, help="bound on spent DPoP proofs kept in memory (past "
         "it, new proofs are refused until old ones expire)")
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
    flag(p, "--decision-log", env=["AUTHZ_DECISION_LOG"], default=OFF,
         help="one JSON record per decision (denials always, allows sampled): 'stdout', "
              "a file PATH (appended to), or 'off'")
    flag(p, "--decision-log-allow-sample-rate", env=["AUTHZ_DECISION_LOG_ALLOW_SAMPLE_RATE"],
         default=1.0, kind=float,
         help="share of allows recorded, 0..1 (denials are always recorded)")
    flag(p, "--decision-log-claims", env=["AUTHZ_DECISION_LOG_CLAIMS"], default="",
         help="claim paths copied into each record, comma-separated (e.g. "
              "'email,realm_access.roles'); none when empty")
    flag(p, "--decision-log-query", env=["AUTHZ_DECISION_LOG_QUERY"], default=False,
         kind=bool, help="keep the query string in the recorded path (it can carry "
                         "secrets: stripped by default)")
    flag(p, "--decision-log-queue", env=["AUTHZ_DECISION_LOG_QUEUE"], default=10_000,
         kind=int, help="records waiting to be written at most; beyond, records are "
                        "dropped and counted (tollgate_authz_decision_log_dropped_total)")
    flag(p, "--decision-log-otlp-endpoint", env=["AUTHZ_DECISION_LOG_OTLP_ENDPOINT",
                                                 "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT"],
         default="", help="also export the records as OpenTelemetry logs over OTLP/gRPC "
                          "to this URL; off when empty")
    flag(p, "--log-level", env=["AUTHZ_LOG_LEVEL", "LOG_LEVEL"], default="info",
         help="debug, info, warning, error (also trace, warn, fatal, panic as "
              "envoyproxy/ratelimit's LOG_LEVEL says them)")
    flag(p, "--log-format", env=["AUTHZ_LOG_FORMAT", "LOG_FORMAT"], default="json",
         help="json or text")
    return p


def check_config(path: str, out: TextIO, err: TextIO, *, strict: bool = False) -> int:
    """Validate and compile `path` (fetching nothing); print the first error's location,
    and each warning (`strict`: a warning fails the check too)."""
    warnings: list[ConfigNote] = []
    try:
        policy = load_policy(path, KeyRegistry(), warnings)
    except ConfigError as exc:
        print(str(exc), file=err)
        return 1
    for note in warnings:
        print(f"warning: {note}", file=err)
    if strict and warnings:
        print(f"{path}: {len(warnings)} warning(s), refused (--strict)", file=err)
        return 1
    routes = len(policy.routes)
    limits = ""
    if policy.limits is not None:
        sets = {s.name for r in policy.limits.by_route.values() for s in (*r.before, *r.after)}
        limits = f", {len(sets)} rate-limit sets"
    print(f"{path}: ok ({len(policy.sources)} identity sources, {routes} routes{limits})",
          file=out)
    return 0


def _load(path: Path, keys: KeyRegistry) -> CompiledPolicy:
    """load_policy, logging each warning (a file that loads but likely says too little)."""
    warnings: list[ConfigNote] = []
    policy = load_policy(path, keys, warnings)
    for note in warnings:
        log.warning("config warning", extra={"warning": str(note)})
    return policy


def decision_log(wanted: DecisionLogOutput) -> DecisionLog | None:
    """The decision log the settings ask for (None: off); OSError when its file cannot
    be opened."""
    sinks: list[RecordSink] = []
    if wanted.to is not None:
        sinks.append(JsonLinesSink.open(wanted.to))
    if wanted.otlp_endpoint:
        from tollgate.otlp_logs import OtlpLogSink  # noqa: PLC0415 - only when asked for

        sinks.append(OtlpLogSink(wanted.otlp_endpoint, "authz-service", "authz decision"))
    if not sinks:
        return None
    built = DecisionLog(wanted.record, sinks, max_queued=wanted.queue)
    queue = built.queue
    if queue is not None:
        DECISION_LOG_DROPPED.set_function(lambda: queue.dropped)
    return built


def limit_counter(wanted: LimitStoreSettings) -> LimitCounter:
    store, _ = build_store(wanted.store)
    return LimitCounter(store, key_prefix=wanted.key_prefix)


def replay_store(wanted: ReplaySettings) -> ReplayStore:
    if not wanted.url:
        return MemoryReplayStore(wanted.memory_max_entries)
    return RedisReplayStore(wanted.url, timeout=wanted.timeout, key_prefix=wanted.key_prefix)


async def serve(
    settings: AuthzSettings, tls: ServerTls | None, counter: LimitCounter,
    replay: ReplayStore | None = None, decisions: DecisionLog | None = None,
) -> None:
    common = settings.common
    config_path = settings.config
    keys = KeyRegistry()
    try:
        holder: ConfigHolder[CompiledPolicy] = ConfigHolder(_load(config_path, keys))
    except ConfigError as exc:
        log.error("invalid config", extra={"error": str(exc)})
        raise SystemExit(1) from None
    CONFIG_LOADS.loaded()
    watcher = ConfigWatcher(
        config_path, holder, lambda: _load(config_path, keys),
        interval=common.reload_interval, also_watch=watched_files, loads=CONFIG_LOADS,
    )
    TOKEN_CACHE_ENTRIES.set_function(lambda: len(holder.current.caches.tokens))
    register_keys_held(keys.keys_held)
    register_reference_metrics(counter.stats, CONFIG_LOADS)  # envoyproxy/ratelimit's names
    register_build_info("authz-service")
    serve_metrics(common.metrics_address)
    tracer = configure_tracing("authz-service", common.otlp_endpoint)
    pipeline = Pipeline(holder, keys, counter, replay=replay, decision_log=decisions)
    if decisions is not None and decisions.queue is not None:
        decisions.queue.start()
    app = None
    if settings.grpc_address is not None:
        # Health: "" and the service name say ready (every JWT source holds usable keys);
        # "liveness" only says the process answers.
        app = GrpcApp(settings.grpc_address, [service_spec(AuthorizationService(pipeline, tracer))],
                      readiness=keys.readiness, tls=tls)
    listeners: list[Listener] = []
    draining = False

    def blockers() -> dict[str, str]:
        if draining:
            return {"draining": "the process is shutting down"}
        return keys.readiness.blockers()

    http = settings.http
    if http is not None:
        door = HttpCheckDoor(pipeline, path_prefix=http.path_prefix, blockers=blockers,
                             forwarding=http.forwarding, tracer=tracer)
        listeners.append(HttpServer(http.address, door,
                                    HttpLimits(max_body_bytes=http.max_body_bytes), tls=tls))

    def on_draining() -> None:
        nonlocal draining
        draining = True

    async def on_stop() -> None:
        await keys.close()
        await counter.store.close()
        await pipeline.replay.close()
        if decisions is not None and decisions.queue is not None:
            # What was decided before the drain is written before the process exits.
            await asyncio.to_thread(decisions.queue.close)

    log.info("config loaded", extra={"file": str(config_path)})
    try:
        await serve_until_signal(
            app,
            listeners=listeners,
            drain_seconds=common.drain_seconds,
            announce_seconds=common.drain_announce_seconds,
            background=[watcher.run, keys.run, *([tls.run] if tls is not None else [])],
            on_reload_signal=watcher.request_reload,
            on_draining=on_draining,
            on_stop=on_stop,
        )
    except OSError as exc:  # the address cannot be bound
        log.error("cannot serve", extra={"error": str(exc)})
        raise SystemExit(1) from None


def parse_settings(argv: Sequence[str] | None = None) -> AuthzSettings:
    """The flags (and their environment variables), checked: a usage error exits 2."""
    parser = build_parser()
    return read_settings(parser, AuthzSettings.from_args, parser.parse_args(argv))


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.check_config:  # the policy alone: what serving would need is not read
        configure_logging(LOG_LEVELS.get(args.log_level.lower(), "info"), args.log_format)
        return check_config(args.check_config, sys.stdout, sys.stderr)
    settings = read_settings(parser, AuthzSettings.from_args, args)
    common = settings.common
    configure_logging(common.log_level, common.log_format)
    try:
        tls = common.server_tls()
        decisions = decision_log(settings.decision_log)
    except SettingsError as exc:
        parser.error(str(exc))
    except OSError as exc:
        parser.error(f"--decision-log: {exc}")
    counter = limit_counter(settings.limits)
    replay = replay_store(settings.dpop_replay)
    run(lambda: serve(settings, tls, counter, replay, decisions))
    return 0


if __name__ == "__main__":
    sys.exit(main())
