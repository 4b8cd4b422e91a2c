from __future__ import annotations

from pathlib import Path
from typing import Any

import pydantic
import pytest

from tollgate.config import ConfigError, LocatedError, load_config_file, parse_config_text


class Inner(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)
    name: str
    count: int = 0


class Outer(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)
    items: list[Inner]


def build(data: Any) -> Outer:
    outer = Outer.model_validate(data)
    for i, item in enumerate(outer.items):
        if item.count < 0:
            raise LocatedError(("items", i, "count"), "must not be negative")
    return outer


def test_valid_document_builds() -> None:
    out = parse_config_text("items:\n  - name: a\n    count: 2\n", "c.yaml", build)
    assert out.items[0].count == 2


def test_unknown_key_names_file_line_and_key() -> None:
    text = "items:\n  - name: a\n    colour: red\n"
    with pytest.raises(ConfigError) as err:
        parse_config_text(text, "c.yaml", build)
    assert err.value.line == 3
    assert str(err.value) == "c.yaml:3: items[0].colour: unknown key 'colour'"


def test_wrong_type_points_at_the_value() -> None:
    text = "items:\n  - name: a\n  - name: b\n    count: many\n"
    with pytest.raises(ConfigError) as err:
        parse_config_text(text, "c.yaml", build)
    assert err.value.line == 4
    assert "items[1].count" in err.value.reason


def test_missing_key_points_at_its_mapping() -> None:
    with pytest.raises(ConfigError) as err:
        parse_config_text("items:\n  - count: 1\n", "c.yaml", build)
    assert err.value.line == 2
    assert "items[0].name: missing required key 'name'" in err.value.reason


def test_duplicate_key_is_rejected_with_its_line() -> None:
    with pytest.raises(ConfigError) as err:
        parse_config_text("items: []\nitems: []\n", "c.yaml", build)
    assert (err.value.line, err.value.reason) == (2, "duplicate key 'items'")


def test_semantic_error_is_located() -> None:
    with pytest.raises(ConfigError) as err:
        parse_config_text("items:\n  - name: a\n    count: -1\n", "c.yaml", build)
    assert str(err.value) == "c.yaml:3: items[0].count: must not be negative"


def test_broken_yaml_reports_line() -> None:
    with pytest.raises(ConfigError) as err:
        parse_config_text("items:\n  - name: [a\n", "c.yaml", build)
    assert err.value.line is not None
    assert err.value.reason.startswith("invalid YAML")


def test_python_tags_are_refused() -> None:
    with pytest.raises(ConfigError) as err:
        parse_config_text("items: !!python/object/apply:os.system ['true']\n", "c.yaml", build)
    assert "invalid" in err.value.reason


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_config_file(tmp_path / "nope.yaml", build)
    assert err.value.reason == "file not found"


def test_non_utf8_file(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_bytes(b"items: [\xff]\n")
    with pytest.raises(ConfigError) as err:
        load_config_file(path, build)
    assert "not UTF-8" in err.value.reason


def test_a_config_error_passes_through_a_context_manager() -> None:
    # Re-raising through contextlib assigns __traceback__: a frozen dataclass
    # exception turned that into FrozenInstanceError (and a traceback in the log).
    import contextlib

    @contextlib.contextmanager
    def around() -> Any:
        yield

    with pytest.raises(ConfigError) as err, around():
        parse_config_text("items: [\n", "c.yaml", build)
    assert str(err.value).startswith("c.yaml:")
    assert err.value == ConfigError(err.value.file, err.value.line, err.value.reason)


def test_a_rejected_document_is_not_kept_alive_by_its_error() -> None:
    with pytest.raises(ConfigError) as err:
        parse_config_text("items:\n  - name: a\n    count: many\n", "c.yaml", build)
    assert err.value.__context__ is None  # not the pydantic error and its frames


def test_loading_leaves_no_cyclic_garbage() -> None:
    # Whatever only the cyclic GC can free makes its next pass longer, and a full
    # pass holds the GIL: a 500k-object leftover was a 0.7 s stall of every thread.
    import gc

    text = "items:\n" + "".join(f"  - {{name: n{i}, count: {i}}}\n" for i in range(3000))
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        parse_config_text(text, "c.yaml", build)
        with pytest.raises(ConfigError):
            parse_config_text(text + "  - {name: x, count: -1}\n", "c.yaml", build)
        unreachable = gc.collect()
    finally:
        if was_enabled:
            gc.enable()
    assert unreachable < 100
