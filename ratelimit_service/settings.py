"""Every ratelimit-service setting in one typed value, checked once at start.

`RateLimitSettings.from_args` turns the parsed flags (cli.build_parser) and the
envoyproxy/ratelimit environment names they fall back to into values; a setting
that cannot be used is refused here with a SettingsError naming its flag.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ratelimit_service.admin import admin_address
from ratelimit_service.decision import DecisionSettings, HeaderNames
from ratelimit_service.limiter import FailureMode
from ratelimit_service.reference_env import prometheus_address
from ratelimit_service.stores.factory import StoreSettings, check_store, pipeline_window
from tollgate.server import normalize_address
from tollgate.settings import CommonSettings, SettingsError

DEFAULT_ADDRESS = "127.0.0.1:8081"


@dataclass(frozen=True, slots=True)
class RulesSource:
    """Where the rules come from (path None: the embedded default) and how to read them."""

    path: str | None
    merge_domains: bool
    allow_empty: bool


@dataclass(frozen=True, slots=True)
class RateLimitSettings:
    address: str  # the gRPC door
    health_address: str  # "" : off
    admin_address: str  # "" : off
    admin_allow_remote: bool
    rules: RulesSource
    store: StoreSettings
    failure_mode: FailureMode
    decision: DecisionSettings
    workers: int
    common: CommonSettings

    @classmethod
    def from_args(cls, args: argparse.Namespace,
                  environ: Mapping[str, str] | None = None) -> RateLimitSettings:
        env = os.environ if environ is None else environ
        rules = RulesSource(resolve_config_path(args.config, env), args.merge_domain_config,
                            args.allow_empty_config)
        try:
            address = resolve_address(args.grpc_address, env)
            health = resolve_health_address(args.health_address, env)
            if args.admin_address:
                admin_address(args.admin_address)
        except ValueError as exc:
            raise SettingsError(str(exc)) from None
        if args.workers < 1:
            raise SettingsError(f"--workers {args.workers}: at least 1")
        return cls(
            address=address, health_address=health, admin_address=args.admin_address,
            admin_allow_remote=args.admin_allow_remote, rules=rules,
            store=_store(args),
            failure_mode=FailureMode(args.store_failure_mode), decision=_decision(args),
            workers=args.workers,
            common=CommonSettings.from_args(
                args, metrics_address=resolve_metrics_address(args.metrics_address, env)),
        )


def _store(args: argparse.Namespace) -> StoreSettings:
    return check_store(StoreSettings(
        url=args.redis_url, redis_type=args.redis_type, socket_type=args.redis_socket_type,
        auth=args.redis_auth, tls=args.redis_tls, timeout=args.redis_timeout,
        local_cache_bytes=args.local_cache_size_bytes, memory_max_keys=args.memory_max_keys,
        stop_when_over=args.stop_cache_key_increment_when_overlimit,
        memory_max_bytes=args.memory_max_bytes, tls_ca_file=args.redis_tls_ca_file,
        username=args.redis_username, pipeline_limit=args.redis_pipeline_limit,
        lease_hits=args.redis_lease_hits,
        pipeline_window=pipeline_window(args.redis_pipeline_window, ""),
    ), "")


def _decision(args: argparse.Namespace) -> DecisionSettings:
    if not 0.0 <= args.near_limit_ratio <= 1.0:
        raise SettingsError("--near-limit-ratio must be between 0 and 1")
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


def resolve_address(explicit: str | None, environ: Mapping[str, str] | None = None) -> str:
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


def resolve_health_address(explicit: str, environ: Mapping[str, str] | None = None) -> str:
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


def resolve_metrics_address(explicit: str, environ: Mapping[str, str] | None = None) -> str:
    """--metrics-address, else the reference's USE_PROMETHEUS + PROMETHEUS_ADDR."""
    return explicit or prometheus_address(os.environ if environ is None else environ)


def resolve_config_path(explicit: str | None,
                        environ: Mapping[str, str] | None = None) -> str | None:
    """--config, else the reference's RUNTIME_ROOT/RUNTIME_SUBDIRECTORY/RUNTIME_APPDIRECTORY."""
    env = os.environ if environ is None else environ
    if explicit:
        return explicit
    root = env.get("RUNTIME_ROOT")
    if root:
        return str(Path(root, env.get("RUNTIME_SUBDIRECTORY", ""),
                        env.get("RUNTIME_APPDIRECTORY") or "config"))
    return None
