"""Property-based fuzzing of config YAML: a config, or one `file:line: reason`.

Mutations of a real authz config (lines dropped, duplicated, swapped, truncated
mid-byte, YAML syntax and alias tricks spliced in) and generated documents with
anchors and aliases. Whatever the text, loading ends in a compiled policy or a
ConfigError naming the file and a line inside it: never another exception, a
RecursionError or a hang.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from authz_service.keys.registry import KeyRegistry
from authz_service.policy.loading import load_policy
from tests.kits.authz_fuzz_kit import policy_text
from tollgate.config import ConfigError, parse_config_text

pytestmark = pytest.mark.integration

BASE = policy_text(Path("jwks.json"))
SPLICES = ["&a ", "*a", "<<: *a", "!!python/object:os.system ", "{", "}", "[", "]", ": ",
           "- ", "\t", "  ", "? ", "|", ">", "'", '"', "%YAML 1.1\n", "---\n", "...\n",
           "&a [*a]", "*undefined", "!!binary ", "~", "null", "0x10", "1e999", "\x00", "é"]


def outcome(text: str, tmp_path: Path) -> ConfigError | None:
    path = tmp_path / "authz.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        load_policy(path, KeyRegistry())
    except ConfigError as exc:
        return exc
    return None


def assert_located(error: ConfigError | None, text: str, tmp_path: Path) -> None:
    if error is None:
        return
    assert error.file == str(tmp_path / "authz.yaml")
    assert str(error).startswith(f"{error.file}:") or str(error).startswith(f"{error.file}: ")
    if error.line is not None:
        assert 1 <= error.line <= text.count("\n") + 2, (error.line, str(error))


@st.composite
def mutated_config(draw: st.DrawFn) -> str:
    lines = BASE.splitlines(keepends=True)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["drop", "dup", "swap", "splice", "truncate", "indent"]))
        at = draw(st.integers(0, len(lines) - 1)) if lines else 0
        if not lines:
            break
        if op == "drop":
            del lines[at]
        elif op == "dup":
            lines.insert(at, lines[at])
        elif op == "swap":
            other = draw(st.integers(0, len(lines) - 1))
            lines[at], lines[other] = lines[other], lines[at]
        elif op == "splice":
            col = draw(st.integers(0, len(lines[at])))
            lines[at] = lines[at][:col] + draw(st.sampled_from(SPLICES)) + lines[at][col:]
        elif op == "indent":
            lines[at] = draw(st.sampled_from(["", " ", "    ", "\t"])) + lines[at].lstrip(" ")
        else:
            text = "".join(lines)
            cut = draw(st.integers(0, len(text)))
            lines = text[:cut].splitlines(keepends=True)
    return "".join(lines)


scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.text(max_size=8),
                    st.sampled_from(["deny", "allow", "RS256", "/orders", "https://i.test"]))
keys = st.sampled_from(["realm", "unmatched", "identities", "routes", "name", "jwt", "match",
                        "path", "prefix", "require", "scopes", "all_of", "no_routes", "x"])
documents = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=4)), max_leaves=30)


@settings(max_examples=600, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(text=mutated_config())
def test_a_mutated_config_loads_or_names_file_and_line(text: str, tmp_path: Path) -> None:
    assert_located(outcome(text, tmp_path), text, tmp_path)


@settings(max_examples=400, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(document=documents, aliased=st.booleans())
def test_a_generated_document_loads_or_names_file_and_line(
    document: Any, aliased: bool, tmp_path: Path
) -> None:
    text = yaml.safe_dump(document)
    if aliased:
        # The same structure shared through anchors, nested: a small bomb.
        text = f"base: &a {yaml.safe_dump(document, default_flow_style=True).strip()}\n" + \
            "".join(f"l{i}: &l{i} [*{'a' if i == 0 else f'l{i - 1}'}, " +
                    f"*{'a' if i == 0 else f'l{i - 1}'}]\n" for i in range(20))
    assert_located(outcome(text, tmp_path), text, tmp_path)


def accept(data: Any) -> Any:
    return data


@settings(max_examples=600, deadline=None, derandomize=True)
@given(text=st.text(alphabet=st.sampled_from(list("ab:-&*[]{}<>!|'\"#\n ,?%")), max_size=200))
def test_yaml_noise_is_data_or_a_located_error(text: str) -> None:
    try:
        parse_config_text(text, "c.yaml", accept)
    except ConfigError as exc:
        assert exc.file == "c.yaml"
        assert exc.line is None or 1 <= exc.line <= text.count("\n") + 2
