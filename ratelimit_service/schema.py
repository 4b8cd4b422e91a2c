"""The envoyproxy/ratelimit YAML format as pydantic models (extra keys forbidden).

Reference files validate unchanged. Tollgate's extensions, all optional:
`rate_limit.algorithm` and `rate_limit.burst`; `rate_limits` (several windows on one
descriptor, instead of `rate_limit`) with `charge_all_windows`; `rate_limit_by`
(the limit chosen by the value of one of the descriptor's entries, e.g. the plan).
Semantic checks (units, algorithms, duplicates) happen when compiling (compiler.py).
"""

from __future__ import annotations

from typing import Annotated, Any

import pydantic
from pydantic import BeforeValidator, ConfigDict, Field

from ratelimit_service.models import MAX_UINT32, Algorithm


def _scalar_to_str(value: Any) -> Any:
    # Go's yaml.v2 reads `value: 123` or `value: true` into a string field; do the same.
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return value


def _one_or_many(value: Any) -> Any:
    # `gold: {unit: ...}` is one window; `gold: [{...}, {...}]` stacked windows.
    return [value] if isinstance(value, dict) else value


Text = Annotated[str, BeforeValidator(_scalar_to_str)]
Count = Annotated[int, Field(ge=0, le=MAX_UINT32)]


class _Model(pydantic.BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ReplacesYaml(_Model):
    name: Text = ""


class RateLimitYaml(_Model):
    requests_per_unit: Count = 0
    unit: Text = ""
    unlimited: bool = False
    name: Text = ""
    replaces: list[ReplacesYaml] | None = None
    algorithm: Text = Algorithm.FIXED_WINDOW
    burst: Count = 0


class WindowYaml(_Model):
    """One window of `rate_limits`, or one choice of `rate_limit_by`."""

    requests_per_unit: Count = 0
    unit: Text = ""
    unlimited: bool = False
    name: Text = ""
    algorithm: Text = Algorithm.FIXED_WINDOW
    burst: Count = 0


Windows = Annotated[list[WindowYaml], BeforeValidator(_one_or_many)]


class RateLimitByYaml(_Model):
    key: Text = ""  # the entry (of this descriptor) whose value chooses the limit
    values: dict[Text, Windows] | None = None
    default: Windows | None = None  # for values not listed (required)


class DescriptorYaml(_Model):
    key: Text = ""
    value: Text = ""
    rate_limit: RateLimitYaml | None = None
    rate_limits: list[WindowYaml] | None = None
    charge_all_windows: bool = False
    rate_limit_by: RateLimitByYaml | None = None
    descriptors: list[DescriptorYaml] | None = None
    shadow_mode: bool = False
    quota_mode: bool = False
    detailed_metric: bool = False
    value_to_metric: bool = False
    share_threshold: bool = False
    metadata: dict[str, Any] | None = None


class DomainYaml(_Model):
    domain: Text = ""
    descriptors: list[DescriptorYaml] | None = None
