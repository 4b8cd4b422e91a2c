"""Config loading: reference files load unchanged; each invalid file names file, line and key."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest

from ratelimit_service.cli import check_config
from ratelimit_service.config import load_rules
from ratelimit_service.defaults import default_rules
from ratelimit_service.models import Algorithm, Unit
from tests.kits.ratelimit_kit import EMPTY_DIRECTORY
from tollgate.config import ConfigError

FIXTURES = Path(__file__).parent / "fixtures"

INVALID = {
    "bad_algorithm.yaml": "7: descriptors[0].rate_limit.algorithm: unknown algorithm "
    "'leaky_faucet' (known: fixed_window, gcra, sliding_window, token_bucket)",
    "bad_limit_unit.yaml": "5: descriptors[0].rate_limit.unit: invalid rate limit unit 'fortnight'",
    "bad_yaml.yaml": "5: invalid YAML: expected ',' or ']', but got '<stream end>'",
    "duplicate_key.yaml": "8: descriptors[1]: "
    "duplicate descriptor composite key 'test-domain.key1_value1'",
    "duplicate_yaml_key.yaml": "6: duplicate key 'unit'",
    "empty_domain.yaml": "1: domain: config file cannot have empty domain",
    "empty_key.yaml": "5: descriptors[0].descriptors[0].key: descriptor has empty key",
    "gcra_too_large.yaml": "7: descriptors[0].rate_limit.algorithm: gcra needs "
    "requests_per_unit x unit in milliseconds below 2^53; use fixed_window for this limit",
    "missing_unit.yaml": "4: descriptors[0].rate_limit.unit: invalid rate limit unit ''",
    "misspelled_key.yaml": "5: descriptors[0].ratelimit: unknown key 'ratelimit'",
    "misspelled_key2.yaml": "8: descriptors[0].rate_limit.limit_name: unknown key 'limit_name'",
    "negative_limit.yaml": "6: descriptors[0].rate_limit.requests_per_unit: "
    "Input should be greater than or equal to 0",
    "non_map_list.yaml": "3: descriptors[0]: "
    "Input should be a valid dictionary or instance of DescriptorYaml",
    "replaces_empty.yaml": "7: descriptors[0].rate_limit.replaces[0]: "
    "should not have an empty replaces entry",
    "replaces_self.yaml": "10: descriptors[0].descriptors[0].rate_limit.replaces[0].name: "
    "replaces should not contain name of same descriptor",
    "share_threshold_no_wildcard.yaml": "5: descriptors[0].share_threshold: share_threshold "
    "can only be used with wildcard values (containing '*'), but found key 'files_exact'",
    "unlimited_with_unit.yaml": "6: descriptors[0].rate_limit.unit: "
    "should not specify rate limit unit when unlimited",
    # Tollgate's extensions
    "stacked_both.yaml": "5: descriptors[0].rate_limits: use only one of rate_limit / rate_limits",
    "stacked_same_unit.yaml": "6: descriptors[0].rate_limits[1].unit: two windows with unit "
    "'minute' (windows 0 and 1): one counter per unit",
    "stacked_empty.yaml": "4: descriptors[0].rate_limits: needs at least one window",
    "stacked_unlimited.yaml": "6: descriptors[0].rate_limits[1].unlimited: a window cannot be "
    "unlimited (use rate_limit: {unlimited: true})",
    "stacked_bad_unit.yaml": "6: descriptors[0].rate_limits[1].unit: "
    "invalid rate limit unit 'fortnight'",
    "charge_all_windows_alone.yaml": "4: descriptors[0].charge_all_windows: "
    "charge_all_windows needs rate_limits (several windows)",
    "burst_without_bucket.yaml": "7: descriptors[0].rate_limit.burst: "
    "fixed_window has no burst (algorithms with one: token_bucket)",
    "limit_by_unknown_key.yaml": "7: descriptors[0].descriptors[0].rate_limit_by.key: "
    "'tier' is not an entry of this descriptor (entries: plan, subject)",
    "limit_by_no_default.yaml": "6: descriptors[0].descriptors[0].rate_limit_by: rate_limit_by "
    "needs a default for values it does not list (default: {unlimited: true} to leave them "
    "unlimited)",
    "limit_by_bad_unit.yaml": "8: descriptors[0].rate_limit_by.values.globex[0].unit: "
    "invalid rate limit unit 'moon'",
    "limit_by_unknown_field.yaml": "6: descriptors[0].rate_limit_by.default[0].per: "
    "unknown key 'per'",
}


def test_every_invalid_fixture_has_an_expected_message() -> None:
    assert sorted(p.name for p in (FIXTURES / "invalid").glob("*.yaml")) == sorted(INVALID)


@pytest.mark.parametrize("name", sorted(INVALID))
def test_invalid_config_names_file_line_and_key(name: str) -> None:
    path = FIXTURES / "invalid" / name
    with pytest.raises(ConfigError) as err:
        load_rules(path)
    assert str(err.value) == f"{path}:{INVALID[name]}"


@pytest.mark.parametrize(
    "name",
    ["basic_config", "wildcard", "shadowmode_config", "share_threshold", "metadata", "stacked",
     "limit_by_plan"],
)
def test_reference_configs_load_unchanged(name: str) -> None:
    rules = load_rules(FIXTURES / "valid" / f"{name}.yaml")
    assert list(rules.domains) == ["test-domain"]


def test_directory_loads_one_domain_per_file(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("domain: a\ndescriptors: []\n")
    (tmp_path / "b.yml").write_text("domain: b\n")
    (tmp_path / ".hidden.yaml").write_text("domain: [broken\n")
    (tmp_path / "notes.txt").write_text("not config")
    assert sorted(load_rules(tmp_path).domains) == ["a", "b"]


def test_duplicate_domain_names_both_files(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("domain: shared\n")
    (tmp_path / "b.yaml").write_text("# second\ndomain: shared\n")
    with pytest.raises(ConfigError) as err:
        load_rules(tmp_path)
    assert str(err.value) == (
        f"{tmp_path / 'b.yaml'}:2: domain: duplicate domain 'shared', "
        f"already defined in {tmp_path / 'a.yaml'}"
    )


def test_missing_path_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_rules(tmp_path / "nope.yaml")
    assert err.value.reason == "file not found"


def test_scalar_values_are_read_as_strings_like_the_reference(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "domain: d\ndescriptors:\n  - key: port\n    value: 443\n"
        "    rate_limit: {unit: SECOND, requests_per_unit: 1, algorithm: gcra}\n"
    )
    tree = load_rules(path).domains["d"]
    rule = tree.root.children["port_443"].rule
    assert rule is not None and rule.limit is not None
    assert (rule.limit.unit, rule.limit.algorithm) == (Unit.SECOND, Algorithm.GCRA)


def test_check_config_reports_ok_and_failure() -> None:
    out, err = io.StringIO(), io.StringIO()
    assert check_config(str(FIXTURES / "valid"), out, err) == 1  # duplicate test-domain
    assert "duplicate domain 'test-domain'" in err.getvalue()
    out, err = io.StringIO(), io.StringIO()
    assert check_config(str(FIXTURES / "valid" / "wildcard.yaml"), out, err) == 0
    assert "ok (domains: test-domain)" in out.getvalue()
    assert err.getvalue() == ""


@pytest.mark.integration
def test_check_config_command_line_exit_code() -> None:
    bad = FIXTURES / "invalid" / "bad_limit_unit.yaml"
    done = subprocess.run(
        [sys.executable, "-m", "ratelimit_service.cli", "--check-config", str(bad)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 1
    assert done.stderr.strip() == f"{bad}:{INVALID['bad_limit_unit.yaml']}"


def test_embedded_default_has_the_demo_domain() -> None:
    tree = default_rules().domains["tollgate"]
    gold = tree.root.children["plan_gold"].children["subject"].rule
    other = tree.root.children["plan"].children["subject"].rule
    address = tree.root.children["remote_address"].rule
    assert gold is not None and gold.limit is not None
    assert (gold.limit.requests_per_unit, gold.limit.unit) == (600, Unit.MINUTE)
    assert other is not None and other.limit is not None
    assert (other.limit.requests_per_unit, other.limit.unit) == (5, Unit.MINUTE)
    assert address is not None and address.limit is not None
    assert (address.limit.requests_per_unit, address.limit.unit) == (50, Unit.SECOND)


def test_tollgate_check_config_uses_the_same_function(capsys: pytest.CaptureFixture[str]) -> None:
    from tollgate_cli.cli import main as tollgate_main

    bad = FIXTURES / "invalid" / "misspelled_key.yaml"
    assert tollgate_main(["check-config", "ratelimit", str(bad)]) == 1
    assert capsys.readouterr().err.strip() == f"{bad}:{INVALID['misspelled_key.yaml']}"
    good = FIXTURES / "valid" / "wildcard.yaml"
    assert tollgate_main(["check-config", "ratelimit", str(good)]) == 0


def test_merge_domain_config_adds_files_and_still_rejects_duplicates(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(
        "domain: shop\ndescriptors:\n  - key: user\n"
        "    rate_limit: {unit: minute, requests_per_unit: 1}\n"
    )
    (tmp_path / "b.yaml").write_text(
        "domain: shop\ndescriptors:\n  - key: path\n    value: /a*\n"
        "    rate_limit: {unit: minute, requests_per_unit: 2}\n"
    )
    tree = load_rules(tmp_path, merge_domains=True).domains["shop"]
    assert sorted(tree.root.children) == ["path_/a*", "user"]
    assert [pattern for pattern, _ in tree.root.wildcards] == ["path_/a*"]
    (tmp_path / "c.yaml").write_text("domain: shop\ndescriptors:\n  - key: user\n")
    with pytest.raises(ConfigError) as err:
        load_rules(tmp_path, merge_domains=True)
    assert str(err.value) == (
        f"{tmp_path / 'c.yaml'}: duplicate descriptor composite key 'shop.user' "
        f"(also in {tmp_path / 'a.yaml'}) while merging domain 'shop'"
    )




def test_a_directory_without_config_files_is_refused_unless_allowed(tmp_path: Path) -> None:
    """Issue 15 item 3: renaming the only *.yaml away used to load as zero domains."""
    (tmp_path / "limits.yaml.bak").write_text("domain: a\n")
    (tmp_path / ".hidden.yaml").write_text("domain: b\n")
    with pytest.raises(ConfigError) as err:
        load_rules(tmp_path)
    assert str(err.value) == f"{tmp_path}: {EMPTY_DIRECTORY}"
    assert load_rules(tmp_path, allow_empty=True).domains == {}
    out, err_text = io.StringIO(), io.StringIO()
    assert check_config(str(tmp_path), out, err_text) == 1
    assert err_text.getvalue().strip() == f"{tmp_path}: {EMPTY_DIRECTORY}"
