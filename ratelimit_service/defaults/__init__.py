"""The embedded default config: used when no --config (or RUNTIME_ROOT) is given.

`tollgate.yaml` here holds domain `tollgate`, the one the local Envoy stack sends:
descriptor entries `[plan=<plan or "free">, subject=<sub>]` and
`[remote_address=<ip>]`. It is packaged with the code (package-data), so the
service starts with no arguments; operators can copy it as a starting point.
"""

from __future__ import annotations

from pathlib import Path

from ratelimit_service.config import load_rules
from ratelimit_service.rules import RuleSet

DEFAULT_CONFIG = Path(__file__).parent / "tollgate.yaml"


def default_rules() -> RuleSet:
    """The embedded default as a RuleSet."""
    return load_rules(DEFAULT_CONFIG)
