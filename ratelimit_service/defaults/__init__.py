"""The embedded default config: used when no --config (or RUNTIME_ROOT) is given.

Domain `tollgate` is the one the local Envoy stack sends: descriptor entries
`[plan=<plan or "free">, subject=<sub>]` and `[remote_address=<ip>]`.
"""

from __future__ import annotations

from ratelimit_service.config import build_domain
from ratelimit_service.rules import RuleSet
from tollgate.config import parse_config_text

NAME = "<embedded>/tollgate.yaml"

DEFAULT_CONFIG = """\
# Tollgate's demo domain. Envoy sends [plan, subject] and [remote_address].
domain: tollgate
descriptors:
  # Gold-plan subjects: 600 requests per minute each.
  - key: plan
    value: gold
    descriptors:
      - key: subject
        rate_limit: {unit: minute, requests_per_unit: 600}
  # Any other plan (Envoy sends "free" when there is none): 5 per minute per subject.
  - key: plan
    descriptors:
      - key: subject
        rate_limit: {unit: minute, requests_per_unit: 5}
  # Every client address: 50 requests per second.
  - key: remote_address
    rate_limit: {unit: second, requests_per_unit: 50}
"""


def default_rules() -> RuleSet:
    """The embedded default as a RuleSet."""
    tree = parse_config_text(DEFAULT_CONFIG, NAME, build_domain).located(NAME, 2)
    return RuleSet({tree.domain: tree})
