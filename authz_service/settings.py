"""Every authz-service setting in one typed value, checked once at start (pure).

`AuthzSettings.from_args` turns the parsed flags (cli.build_parser) into values the
rest of the service reads; every setting that cannot be used is refused here with a
SettingsError naming its flag, so nothing later meets a bad setting halfway through
starting. Opening files, sockets and stores is left to cli.serve.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from authz_service.decision_log import DecisionLogSettings, parse_claims
from authz_service.doors.forwarded import CONVENTIONS, Forwarding, TrustedForwarders
from ratelimit_service.stores.factory import StoreSettings, check_store, pipeline_window
from ratelimit_service.stores.target import TargetError, parse_redis_url
from tollgate.server import normalize_address
from tollgate.settings import CommonSettings, SettingsError

DEFAULT_CONFIG = Path(__file__).parent / "defaults" / "authz.yaml"
OFF = "off"


@dataclass(frozen=True, slots=True)
class HttpDoorSettings:
    """The plain-HTTP check door (Envoy's http_service, or a forwarding proxy)."""

    address: str
    path_prefix: str
    max_body_bytes: int
    forwarding: Forwarding | None  # None: Envoy asks (no forwarded headers believed)


@dataclass(frozen=True, slots=True)
class LimitStoreSettings:
    """Where the policy's rate limits are counted."""

    store: StoreSettings
    key_prefix: str


@dataclass(frozen=True, slots=True)
class ReplaySettings:
    """Where spent DPoP proofs are remembered (url empty: in memory)."""

    url: str
    timeout: float
    key_prefix: str
    memory_max_entries: int


@dataclass(frozen=True, slots=True)
class DecisionLogOutput:
    """Where decision records go (`to`: 'stdout', a file path, or None) and how."""

    record: DecisionLogSettings
    to: str | None
    queue: int
    otlp_endpoint: str


@dataclass(frozen=True, slots=True)
class AuthzSettings:
    config: Path
    grpc_address: str | None  # None: the gRPC door is off
    http: HttpDoorSettings | None  # None: the HTTP door is off
    limits: LimitStoreSettings
    dpop_replay: ReplaySettings
    decision_log: DecisionLogOutput
    common: CommonSettings

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> AuthzSettings:
        grpc = _address("--grpc-address/AUTHZ_GRPC_ADDRESS", args.grpc_address)
        http_address = _address("--http-address/AUTHZ_HTTP_ADDRESS", args.http_address)
        if grpc is None and http_address is None:
            raise SettingsError("--grpc-address and --http-address are both off: "
                                "nothing to serve")
        return cls(
            config=Path(args.config) if args.config else DEFAULT_CONFIG,
            grpc_address=grpc,
            http=_http_door(args, http_address),
            limits=_limits(args),
            dpop_replay=_replay(args),
            decision_log=_decision_log(args),
            common=CommonSettings.from_args(args),
        )


def _address(name: str, value: str) -> str | None:
    if value == OFF:
        return None
    try:
        normalize_address(value)
    except ValueError as exc:
        raise SettingsError(f"{name}: {exc}") from None
    return value


def _http_door(args: argparse.Namespace, address: str | None) -> HttpDoorSettings | None:
    forwarding = _forwarding(args, address)
    if address is None:
        return None
    prefix = args.http_path_prefix
    if not prefix.startswith("/") or prefix.endswith("/"):
        raise SettingsError(f"--http-path-prefix '{prefix}' must start with '/' and not "
                            "end with one")
    if args.http_max_body_bytes < 0:
        raise SettingsError(f"--http-max-body-bytes {args.http_max_body_bytes}: at least 0")
    return HttpDoorSettings(address, prefix, args.http_max_body_bytes, forwarding)


def _forwarding(args: argparse.Namespace, address: str | None) -> Forwarding | None:
    if args.http_forwarded == OFF:
        if args.http_trusted_forwarders:
            raise SettingsError("--http-trusted-forwarders is only read with --http-forwarded")
        return None
    if address is None:
        raise SettingsError("--http-forwarded needs the HTTP door (--http-address is off)")
    try:
        trusted = TrustedForwarders.parse(args.http_trusted_forwarders)
    except ValueError as exc:
        raise SettingsError(f"--http-trusted-forwarders: {exc}") from None
    return Forwarding(CONVENTIONS[args.http_forwarded], trusted)


def _limits(args: argparse.Namespace) -> LimitStoreSettings:
    store = check_store(StoreSettings(
        url=args.limits_redis_url, auth=args.limits_redis_auth, tls=args.limits_redis_tls,
        timeout=args.limits_redis_timeout, memory_max_keys=args.limits_memory_max_keys,
        username=args.limits_redis_username, tls_ca_file=args.limits_redis_tls_ca_file,
        pipeline_limit=args.limits_redis_pipeline_limit,
        lease_hits=args.limits_redis_lease_hits,
        pipeline_window=pipeline_window(args.limits_redis_pipeline_window, "limits-"),
    ), "limits-")
    return LimitStoreSettings(store, args.limits_key_prefix)


def _replay(args: argparse.Namespace) -> ReplaySettings:
    replay = ReplaySettings(args.dpop_replay_redis_url, args.dpop_replay_redis_timeout,
                            args.dpop_replay_key_prefix, args.dpop_replay_memory_max_entries)
    if replay.url:
        try:
            parse_redis_url(replay.url)
        except TargetError as exc:
            raise SettingsError(f"--dpop-replay-redis-url: {exc}") from None
    if not replay.timeout > 0:
        raise SettingsError(f"--dpop-replay-redis-timeout {replay.timeout}: must be above 0")
    if replay.memory_max_entries < 1:
        raise SettingsError(
            f"--dpop-replay-memory-max-entries {replay.memory_max_entries}: at least 1")
    return replay


def _decision_log(args: argparse.Namespace) -> DecisionLogOutput:
    try:
        claims = parse_claims(args.decision_log_claims)
    except ValueError as exc:  # a claim path that cannot be read
        raise SettingsError(f"--decision-log-claims: {exc}") from None
    try:
        record = DecisionLogSettings(allow_sample_rate=args.decision_log_allow_sample_rate,
                                     claims=claims, keep_query=args.decision_log_query)
    except ValueError as exc:
        raise SettingsError(f"--decision-log-allow-sample-rate: {exc}") from None
    if args.decision_log_queue < 1:
        raise SettingsError(f"--decision-log-queue {args.decision_log_queue}: at least 1")
    to = None if args.decision_log == OFF else args.decision_log
    return DecisionLogOutput(record, to, args.decision_log_queue,
                             args.decision_log_otlp_endpoint)
