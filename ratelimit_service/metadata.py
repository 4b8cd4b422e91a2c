"""RESPONSE_DYNAMIC_METADATA: what the reference puts in the response's dynamic_metadata.

The request (domain, each descriptor's `key=value` entries, its limit override and
hits_addend) and, under `metadata`, the config `metadata` of every limit that passed,
merged (nested mappings merged, the first value kept on conflict). Envoy exposes it
to later filters and access logs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ratelimit_service.decision import Check, Code, DescriptorStatus
from ratelimit_service.models import RateLimitQuery


def dynamic_metadata(
    query: RateLimitQuery, checks: Sequence[Check], statuses: Sequence[DescriptorStatus]
) -> dict[str, Any]:
    descriptors = []
    for d in query.descriptors:
        item: dict[str, Any] = {"entries": [f"{e.key}={e.value}" for e in d.entries]}
        if d.limit_override is not None:
            item["limit"] = (
                f"requests_per_unit:{d.limit_override.requests_per_unit} "
                f"unit:{d.limit_override.unit.name}"
            )
        if d.hits_addend is not None:
            item["hitsAddend"] = d.hits_addend
        descriptors.append(item)
    out: dict[str, Any] = {"domain": query.domain, "descriptors": descriptors}
    if query.hits_addend:
        out["hitsAddend"] = query.hits_addend
    merged: dict[str, Any] = {}
    for check, status in zip(checks, statuses, strict=True):
        if check.unlimited or status.code is Code.OVER_LIMIT or check.applied is None:
            continue
        if check.applied.rule.metadata:
            _merge(merged, check.applied.rule.metadata)
    if merged:
        out["metadata"] = merged
    return out


def _merge(into: dict[str, Any], source: Mapping[str, Any]) -> None:
    for key, value in source.items():
        if key not in into:
            into[key] = dict(value) if isinstance(value, Mapping) else value
        elif isinstance(into[key], dict) and isinstance(value, Mapping):
            _merge(into[key], value)
