"""Hostile YAML: every bomb, loop and oversized document is a `file:line: reason`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tollgate._yaml import YamlError, YamlLimits, load_yaml
from tollgate.config import ConfigError, load_config_file

FIXTURES = Path(__file__).parent / "fixtures" / "hostile_yaml"

INVALID = {
    "alias_bomb.yaml": "7: aliases expand the document past 200000 values",
    "merge_bomb.yaml": "2: aliases expand the document past 200000 values",
    "self_alias_sequence.yaml": "3: alias '*loop' refers to a node containing it",
    "self_alias_mapping.yaml": "4: alias '*me' refers to a node containing it",
    "deep_nesting.yaml": "2: nested deeper than 100 levels",
    "too_many_aliases.yaml": "2: more than 1000 aliases",
    "duplicate_anchor.yaml": "2: invalid YAML: found duplicate anchor 'x'",
    "bad_merge.yaml": "3: invalid value: expected a mapping for merging, but found scalar",
    "complex_key.yaml": "2: mapping keys must be scalars",
    "control_character.yaml": "2: invalid YAML: special characters are not allowed "
    "(character #x0007)",
}


def accept_anything(data: Any) -> Any:
    return data


def test_every_hostile_fixture_has_an_expected_message() -> None:
    assert sorted(p.name for p in FIXTURES.glob("*.yaml")) == sorted(INVALID)


@pytest.mark.parametrize("name", sorted(INVALID))
def test_hostile_yaml_is_refused_with_file_line_and_reason(name: str) -> None:
    path = FIXTURES / name
    with pytest.raises(ConfigError) as err:
        load_config_file(path, accept_anything)
    assert str(err.value) == f"{path}:{INVALID[name]}"


def test_a_document_over_the_size_limit_is_refused_before_parsing(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_text("a: '" + "x" * (1024 * 1024) + "'\n")
    with pytest.raises(ConfigError) as err:
        load_config_file(path, accept_anything)
    assert str(err.value) == f"{path}: document larger than 1048576 bytes"


def test_size_is_counted_in_bytes_not_characters() -> None:
    with pytest.raises(YamlError) as err:
        load_yaml("a: 'ééééé'\n", YamlLimits(max_bytes=12))
    assert err.value.reason == "document larger than 12 bytes"


def test_the_cpu_budget_stops_a_slow_document() -> None:
    text = "items:\n" + "".join(f"  - {{k: v{i}, n: {i}}}\n" for i in range(5000))
    with pytest.raises(YamlError) as err:
        load_yaml(text, YamlLimits(max_cpu_seconds=0.0))
    assert err.value.reason == "document takes more than 0 s of CPU to load"
    assert load_yaml(text).data["items"][4999] == {"k": "v4999", "n": 4999}


def test_aliases_within_the_limits_still_work() -> None:
    doc = load_yaml("base: &b {unit: second, requests_per_unit: 5}\nuse: [*b, *b]\n")
    assert doc.data["use"] == [{"unit": "second", "requests_per_unit": 5}] * 2
    merged = load_yaml("base: &b {x: 1}\nuse:\n  <<: *b\n  y: 2\n")
    assert merged.data["use"] == {"x": 1, "y": 2}


def test_expansion_is_counted_once_per_shared_node() -> None:
    # 9^4 = 6561 strings expanded: allowed at the default, refused under 6000.
    text = (
        'a: &a ["l","l","l","l","l","l","l","l","l"]\n'
        "b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\n"
        "c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
        "d: [*c,*c,*c,*c,*c,*c,*c,*c,*c]\n"
    )
    assert len(load_yaml(text).data["d"]) == 9
    with pytest.raises(YamlError) as err:
        load_yaml(text, YamlLimits(max_values=6000))
    assert (err.value.line, err.value.reason) == (
        4, "aliases expand the document past 6000 values")


@pytest.mark.parametrize("depth", [100, 101])
def test_nesting_limit_is_exact(depth: int) -> None:
    text = "[" * depth + "]" * depth
    if depth <= 100:
        load_yaml(text)
        return
    with pytest.raises(YamlError) as err:
        load_yaml(text)
    assert err.value.reason == "nested deeper than 100 levels"


def test_deep_nesting_far_past_the_recursion_limit_is_a_config_error() -> None:
    with pytest.raises(YamlError) as err:
        load_yaml("a: " + "[" * 50_000 + "]" * 50_000)
    assert (err.value.line, err.value.reason) == (1, "nested deeper than 100 levels")
