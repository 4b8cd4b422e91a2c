"""The compiled rule tree: one lookup per descriptor, as envoyproxy/ratelimit does it.

Per descriptor entry the lookup tries `key_value`, then the wildcard values of that
level in config order (`foo*`, `a*b*c`), then the bare `key`. A limit applies only
when the descriptor's last entry lands on a node with a `rate_limit`. A
`share_threshold` wildcard makes every matching value share one counter. A node
compiled from `rate_limit_by` picks its rule by the value of one of the descriptor's
entries (a plan, a tenant), with a default for values it does not list.

Compiled by `ratelimit_service.compiler`; this module knows nothing of YAML.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from ratelimit_service.models import AppliedLimit, Descriptor, Entry, Rule


@dataclass(frozen=True, slots=True)
class Selector:
    """`rate_limit_by`: the rule for the value of the entry at `depth` of the descriptor."""

    depth: int
    rules: Mapping[str, Rule]
    default: Rule

    def pick(self, entries: tuple[Entry, ...]) -> Rule:
        return self.rules.get(entries[self.depth].value, self.default)


@dataclass(slots=True)
class Node:
    children: dict[str, Node] = field(default_factory=dict)
    wildcards: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)
    rule: Rule | None = None
    selector: Selector | None = None
    value_to_metric: bool = False
    share_threshold: bool = False


@dataclass(frozen=True)
class RuleTree:
    """The compiled rules of one domain."""

    domain: str
    root: Node
    file: str = ""
    domain_line: int | None = None

    def located(self, file: str, line: int | None) -> RuleTree:
        return replace(self, file=file, domain_line=line)

    def clashes_with(self, other: RuleTree) -> str:
        """A top-level descriptor both trees define ('' if none)."""
        return next((key for key in other.root.children if key in self.root.children), "")

    def merged_with(self, other: RuleTree) -> RuleTree:
        """This domain plus `other`'s top-level descriptors (they must not clash)."""
        root = Node(
            children={**self.root.children, **other.root.children},
            wildcards=[*self.root.wildcards, *other.root.wildcards],
        )
        return replace(self, root=root)

    def lookup(self, descriptor: Descriptor) -> AppliedLimit | None:
        """The limit that applies to a descriptor, or None."""
        entries = descriptor.entries
        if descriptor.limit_override is not None:
            # Envoy's per-descriptor override: never shadow, quota or unlimited.
            key = descriptor_key(self.domain, entries)
            return AppliedLimit(Rule(key, (descriptor.limit_override,)), entries, key)
        node = self.root
        found: Rule | None = None
        metric_parts = [self.domain]
        detailed_parts = [self.domain]
        shared: dict[int, str] = {}
        last = len(entries) - 1
        for i, entry in enumerate(entries):
            final = f"{entry.key}_{entry.value}"
            detailed_parts.append(final)
            nxt = node.children.get(final)
            wildcard = ""
            if nxt is None:
                for pattern, parts in node.wildcards:
                    if wildcard_match(parts, final):
                        nxt, wildcard = node.children[pattern], pattern
                        break
            matched_value = nxt is not None
            if nxt is None:
                nxt = node.children.get(entry.key)
            if nxt is None:
                metric_parts.append(entry.key)
                break
            pattern_value = wildcard.removeprefix(f"{entry.key}_")
            if wildcard and nxt.share_threshold:
                shared[i] = pattern_value
            metric_parts.append(
                _metric_part(
                    entry, nxt, wildcard=wildcard, pattern_value=pattern_value,
                    matched_value=matched_value, shared=shared.get(i, ""),
                )
            )
            if i == last:
                found = nxt.rule if nxt.selector is None else nxt.selector.pick(entries)
            if not nxt.children:
                break
            node = nxt
        if found is None:
            return None
        counter_entries = entries
        if shared:
            counter_entries = tuple(
                Entry(e.key, shared.get(i, e.value)) for i, e in enumerate(entries)
            )
        if found.detailed_metric:
            if shared:
                stats_key = descriptor_key(self.domain, counter_entries)
            else:
                stats_key = ".".join(detailed_parts)
        else:
            stats_key = ".".join(metric_parts)
        return AppliedLimit(found, counter_entries, stats_key)


def _metric_part(
    entry: Entry, node: Node, *, wildcard: str, pattern_value: str, matched_value: bool,
    shared: str,
) -> str:
    # value_to_metric puts the request's value in the stats key; a shared wildcard keeps
    # its pattern so all values add up under one name.
    if wildcard:
        value = shared or (entry.value if node.value_to_metric else pattern_value)
    elif matched_value:
        value = entry.value
    else:
        value = entry.value if node.value_to_metric else ""
    return f"{entry.key}_{value}" if value else entry.key


@dataclass(frozen=True)
class RuleSet:
    """All domains; a reload swaps a whole RuleSet."""

    domains: Mapping[str, RuleTree]

    def lookup(self, domain: str, descriptor: Descriptor) -> AppliedLimit | None:
        tree = self.domains.get(domain)
        return None if tree is None else tree.lookup(descriptor)


def descriptor_key(domain: str, entries: tuple[Entry, ...]) -> str:
    """`domain.key_value.key2` (the value part omitted when empty)."""
    parts = [f"{e.key}_{e.value}" if e.value else e.key for e in entries]
    return f"{domain}.{'.'.join(parts)}"


def wildcard_match(parts: tuple[str, ...], value: str) -> bool:
    """Match `value` against a pattern pre-split on `*`; each `*` matches any run."""
    if len(parts) == 1:
        return parts[0] == value
    first, last = parts[0], parts[-1]
    if not value.startswith(first) or not value.endswith(last):
        return False
    if len(value) < sum(len(p) for p in parts):
        return False
    remaining = value[len(first) : len(value) - len(last)]
    for part in parts[1:-1]:
        index = remaining.find(part)
        if index < 0:
            return False
        remaining = remaining[index + len(part) :]
    return True
