"""Tollgate's shared core: config loading and reload, gRPC bootstrap, settings, logging."""

from __future__ import annotations

from tollgate import grpc_env  # noqa: F401 - first: grpc reads it when imported
from tollgate.config import ConfigError, load_config_file, parse_config_text
from tollgate.reload import ConfigHolder, ConfigWatcher

__all__ = [
    "ConfigError",
    "ConfigHolder",
    "ConfigWatcher",
    "load_config_file",
    "parse_config_text",
]
