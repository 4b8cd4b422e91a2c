"""`--version` for every command: the installed distribution's version, one line."""

from __future__ import annotations

import argparse
import platform
from importlib import metadata

DISTRIBUTION = "tollgate"


def version() -> str:
    """The installed version ('unknown' when run from a tree that was never installed)."""
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return "unknown"


def add_version(parser: argparse.ArgumentParser) -> None:
    """`--version`: `PROG VERSION (Python X.Y.Z)`, then exit 0."""
    parser.add_argument(
        "--version", action="version",
        version=f"%(prog)s {version()} (Python {platform.python_version()})",
        help="print the version and exit",
    )
