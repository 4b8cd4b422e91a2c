"""Command-line flags that also read environment variables.

Every flag has an environment variable; the flag wins over the variable, the
variable over the default. Settings are read once at start (never on reload), and
each service turns them into one typed, checked settings object (its `settings`
module), of which `CommonSettings` is the part both services share.
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from tollgate.tls import ServerTls, TlsError, TlsFiles

T = TypeVar("T")


def flag(
    parser: argparse.ArgumentParser,
    name: str,
    *,
    env: Sequence[str],
    default: Any = None,
    help: str,
    kind: type = str,
    choices: Sequence[str] | None = None,
) -> None:
    """Add `--name`, defaulting to the first set variable in `env`, then `default`."""
    value: Any = default
    for var in env:
        raw = os.environ.get(var)
        if raw is not None and raw != "":
            value = _convert(raw, kind, var)
            if choices is not None and value not in choices:  # argparse checks flags only
                raise SystemExit(f"${var}: one of {', '.join(choices)}, got '{raw}'")
            break
    names = ", ".join(f"${v}" for v in env)
    if kind is bool:
        parser.add_argument(
            name,
            action=argparse.BooleanOptionalAction,
            default=value,
            help=f"{help} (env {names})",
        )
        return
    parser.add_argument(
        name,
        default=value,
        type=kind,
        choices=choices,
        help=f"{help} (env {names}; default: {default})",
    )


def _convert(raw: str, kind: type, var: str) -> Any:
    if kind is bool:
        lowered = raw.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise SystemExit(f"${var}: expected true/false, got '{raw}'")
    try:
        return kind(raw)
    except ValueError:
        raise SystemExit(f"${var}: expected {kind.__name__}, got '{raw}'") from None


class SettingsError(ValueError):
    """A setting that cannot be used; the message starts with the flag that says it."""


def read_settings(parser: argparse.ArgumentParser,
                  build: Callable[[argparse.Namespace], T],
                  args: argparse.Namespace) -> T:
    """The parsed flags (and their environment variables), built into a service's
    settings by `build`; an unusable one is a usage error (exit 2, the flag named)."""
    try:
        return build(args)
    except SettingsError as exc:
        parser.error(str(exc))


@dataclass(frozen=True, slots=True)
class CommonSettings:
    """What both services are told the same way: TLS on their doors, reloads, the drain,
    metrics, traces and logs (each service's own settings hold one)."""

    tls: TlsFiles | None
    reload_interval: float
    drain_seconds: float
    drain_announce_seconds: float
    metrics_address: str
    otlp_endpoint: str
    log_level: str
    log_format: str

    @classmethod
    def from_args(cls, args: argparse.Namespace,
                  metrics_address: str | None = None) -> CommonSettings:
        """Checked once, at start; SettingsError names the flag at fault.
        `metrics_address`: where --metrics-address resolved to when a service reads
        other names for it too (default: the flag's value)."""
        try:
            tls = TlsFiles.from_flags(args.tls_cert, args.tls_key, args.tls_client_ca)
        except TlsError as exc:
            raise SettingsError(f"--tls-cert/--tls-key/--tls-client-ca: {exc}") from None
        if not args.reload_interval > 0:
            raise SettingsError(f"--reload-interval {args.reload_interval}: must be above 0")
        if args.drain_seconds < 0:
            raise SettingsError(f"--drain-seconds {args.drain_seconds}: at least 0")
        if args.drain_announce_seconds < 0:  # longer than the drain: cut to it, at stop
            raise SettingsError(
                f"--drain-announce-seconds {args.drain_announce_seconds}: at least 0")
        level = LOG_LEVELS.get(args.log_level.lower())
        if level is None:
            raise SettingsError(f"--log-level {args.log_level}: one of "
                                f"{', '.join(sorted(set(LOG_LEVELS.values())))}")
        if args.log_format.lower() not in LOG_FORMATS:
            raise SettingsError(f"--log-format {args.log_format}: json or text")
        return cls(tls=tls, reload_interval=args.reload_interval,
                   drain_seconds=args.drain_seconds,
                   drain_announce_seconds=args.drain_announce_seconds,
                   metrics_address=args.metrics_address if metrics_address is None
                   else metrics_address, otlp_endpoint=args.otlp_endpoint,
                   log_level=level, log_format=args.log_format.lower())

    def server_tls(self) -> ServerTls | None:
        """The doors' TLS, watched for rotation at the reload interval (None: plain)."""
        if self.tls is None:
            return None
        try:
            return ServerTls(self.tls, interval=self.reload_interval)
        except TlsError as exc:
            raise SettingsError(f"--tls-cert/--tls-key/--tls-client-ca: {exc}") from None


# Python's names and those of envoyproxy/ratelimit's LOG_LEVEL (logrus: trace, warn,
# fatal, panic), which a migrated deployment may still set.
LOG_LEVELS = {"trace": "debug", "debug": "debug", "info": "info", "warn": "warning",
              "warning": "warning", "error": "error", "critical": "critical",
              "fatal": "critical", "panic": "critical"}
LOG_FORMATS = ("json", "text")


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ns|us|µs|ms|s)?\s*$")
_SCALE = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, None: 1.0}


def duration(text: str) -> float:
    """Seconds from `150us`, `1ms`, `0.5s` or a bare number of seconds (as the
    reference's Go durations read); ValueError otherwise."""
    found = _DURATION.match(text)
    if found is None:
        raise ValueError(f"'{text}' is not a duration such as 500us, 1ms or 0")
    return float(found.group(1)) * _SCALE[found.group(2)]
