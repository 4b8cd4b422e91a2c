"""Command-line flags that also read environment variables.

Every flag has an environment variable; the flag wins over the variable, the
variable over the default. Settings are read once at start (never on reload).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from typing import Any


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
