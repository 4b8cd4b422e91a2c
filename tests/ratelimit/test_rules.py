"""RuleTree lookup, case by case as envoyproxy/ratelimit's config_impl resolves it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ratelimit_service.config import load_rules
from ratelimit_service.models import AppliedLimit, Descriptor, Entry, Limit, Unit
from ratelimit_service.rules import RuleSet, wildcard_match

FIXTURES = Path(__file__).parent / "fixtures" / "valid"


def rules(name: str) -> RuleSet:
    return load_rules(FIXTURES / f"{name}.yaml")


def find(
    rs: RuleSet, *entries: tuple[str, str], domain: str = "test-domain"
) -> AppliedLimit | None:
    return rs.lookup(domain, Descriptor(tuple(Entry(k, v) for k, v in entries)))


def limit_of(applied: AppliedLimit | None) -> tuple[int, Unit] | None:
    if applied is None or applied.rule.limit is None:
        return None
    return applied.rule.limit.requests_per_unit, applied.rule.limit.unit


def test_key_value_beats_bare_key_and_bare_key_is_the_default() -> None:
    rs = rules("basic_config")
    assert limit_of(find(rs, ("key2", "value2"))) == (30, Unit.MINUTE)
    assert limit_of(find(rs, ("key2", "anything"))) == (20, Unit.MINUTE)
    assert find(rs, ("key2", "anything")).rule.full_key == "test-domain.key2"  # type: ignore[union-attr]


def test_value_without_limit_whitelists() -> None:
    assert find(rules("basic_config"), ("key2", "value3")) is None


def test_nested_lookup_and_depth_must_match() -> None:
    rs = rules("basic_config")
    assert limit_of(find(rs, ("key1", "value1"), ("subkey1", "x"))) == (5, Unit.SECOND)
    assert limit_of(find(rs, ("key1", "value1"), ("subkey1", "subvalue1"))) == (10, Unit.SECOND)
    # The first level has no limit of its own.
    assert find(rs, ("key1", "value1")) is None
    # More entries than the config is deep: no limit.
    assert find(rs, ("key1", "value1"), ("subkey1", "x"), ("extra", "y")) is None
    # key5 has a limit at both levels: the last entry decides.
    assert limit_of(find(rs, ("key5", "value5"))) == (15, Unit.DAY)
    assert limit_of(find(rs, ("key5", "value5"), ("subkey5", "subvalue5"))) == (25, Unit.DAY)


def test_unknown_domain_and_unknown_key() -> None:
    rs = rules("basic_config")
    assert find(rs, ("key2", "x"), domain="nope") is None
    assert find(rs, ("nothing", "x")) is None


def test_unlimited_and_named_rules() -> None:
    rs = rules("basic_config")
    unlimited = find(rs, ("key6", "x"))
    assert unlimited is not None and unlimited.rule.unlimited and unlimited.rule.limit is None
    named = find(rs, ("key4", "x"))
    assert named is not None and named.rule.name == "key4_rate_limit"


def test_wildcards_trailing_middle_multi_and_nested() -> None:
    rs = rules("wildcard")
    assert limit_of(find(rs, ("wild", "foo"))) == (20, Unit.MINUTE)
    assert limit_of(find(rs, ("wild", "foobar"))) == (20, Unit.MINUTE)
    assert find(rs, ("wild", "fo")) is None
    assert find(rs, ("noWild", "foobar")) is None
    assert limit_of(find(rs, ("midWild", "barxyzb"))) == (20, Unit.MINUTE)
    assert find(rs, ("midWild", "barxyzc")) is None
    assert limit_of(find(rs, ("multiWild", "foo1bar2baz"))) == (10, Unit.MINUTE)
    assert find(rs, ("multiWild", "foo1baz2bar")) is None
    assert limit_of(find(rs, ("nestedWild", "val1"), ("wild", "goober"))) == (20, Unit.MINUTE)


def test_wildcard_counters_are_per_value_unless_share_threshold() -> None:
    per_value = find(rules("wildcard"), ("wild", "foobar"))
    assert per_value is not None and per_value.counter_entries == (Entry("wild", "foobar"),)
    rs = rules("share_threshold")
    a, b = find(rs, ("files", "files/a")), find(rs, ("files", "files/b"))
    assert a is not None and b is not None
    assert a.counter_entries == b.counter_entries == (Entry("files", "files/*"),)
    nested = find(rs, ("user", "user/1"), ("resource", "res/9"), ("action", "get"))
    assert nested is not None
    assert nested.counter_entries == (
        Entry("user", "user/*"), Entry("resource", "res/*"), Entry("action", "get"),
    )
    mixed = find(rs, ("path", "path/x"), ("file", "file/y"), ("type", "t"))
    assert mixed is not None
    assert mixed.counter_entries == (
        Entry("path", "path/*"), Entry("file", "file/y"), Entry("type", "t"),
    )
    # An explicit value wins over a shared wildcard.
    explicit = find(rs, ("file", "test1"))
    assert limit_of(explicit) == (50, Unit.MINUTE)


def test_stats_keys_detailed_and_value_to_metric() -> None:
    rs = rules("basic_config")
    assert find(rs, ("key7", "v")).stats_key == "test-domain.key7_v"  # type: ignore[union-attr]
    assert find(rs, ("key2", "v")).stats_key == "test-domain.key2"  # type: ignore[union-attr]
    shared = rules("share_threshold")
    route = find(shared, ("route", "api/v1"), ("method", "GET"))
    assert route is not None and route.stats_key == "test-domain.route_api/*.method"


def test_envoy_limit_override_applies_only_in_a_known_domain() -> None:
    rs = rules("basic_config")
    override = Limit(3, Unit.HOUR)
    d = Descriptor((Entry("anything", "x"), Entry("k", "")), limit_override=override)
    applied = rs.lookup("test-domain", d)
    assert applied is not None and applied.rule.limit == override
    assert applied.rule.full_key == "test-domain.anything_x.k"
    assert not applied.rule.shadow_mode
    assert rs.lookup("unknown", d) is None


@pytest.mark.parametrize(
    ("pattern", "value", "expected"),
    [
        ("a*", "a", True), ("a*", "abc", True), ("a*", "b", False),
        ("a*c", "abc", True), ("a*c", "ac", True), ("a*c", "ab", False),
        ("a*b*c", "abc", True), ("a*b*c", "axbyc", True), ("a*b*c", "acb", False),
        ("ab*ba", "aba", False), ("*", "", True), ("x", "x", True),
    ],
)
def test_wildcard_match(pattern: str, value: str, expected: bool) -> None:
    assert wildcard_match(tuple(pattern.split("*")), value) is expected


@settings(max_examples=300, deadline=None)
@given(
    pattern=st.lists(st.text("ab", max_size=3), min_size=1, max_size=4).map("*".join),
    value=st.text("ab", max_size=8),
)
def test_wildcard_match_agrees_with_a_regex(pattern: str, value: str) -> None:
    """Each `*` matches any run of characters, everything else literally."""
    regex = ".*".join(re.escape(part) for part in pattern.split("*"))
    expected = re.fullmatch(regex, value, flags=re.DOTALL) is not None
    assert wildcard_match(tuple(pattern.split("*")), value) is expected
